-- When sla last took a lifecycle event of each ticket, and whether it is closed: what-if
-- replays the tickets that can still have an outcome in its window (open, or active since).
ALTER TABLE tickets ADD COLUMN updated_at timestamptz, ADD COLUMN closed boolean NOT NULL DEFAULT false;
