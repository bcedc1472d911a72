-- A ticket the system may not resolve unanswered (its category's resolution needs a person:
-- complaints) tells its people once per question (services/dispatch/closing.py).
ALTER TABLE tickets ADD COLUMN left_unanswered boolean NOT NULL DEFAULT false;
