-- Tickets waiting for the customer's reply are resolved once the policy's
-- routing.resolve_unanswered_after has passed (services/dispatch/closing.py): found by when they
-- began to wait, among the waiting only. Tickets already waiting count from their last change,
-- which is no earlier than when they began to wait: none is resolved early.
ALTER TABLE tickets ADD COLUMN waiting_since timestamptz;
UPDATE tickets SET waiting_since = updated_at WHERE status = 'waiting_for_customer';
CREATE INDEX tickets_waiting ON tickets (waiting_since) WHERE status = 'waiting_for_customer';
