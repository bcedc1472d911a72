-- Resolved tickets closed once the policy's routing.close_after has passed (services/dispatch/
-- closing.py): found by their resolution time, among the resolved only.
CREATE INDEX tickets_resolved ON tickets (resolved_at) WHERE status = 'resolved';
