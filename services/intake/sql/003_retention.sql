-- Retention of personal data (services/intake/retention.py): whose each ticket is (the
-- customer's pseudonym) and when it closed, so a customer whose tickets all closed longer ago
-- than the policy's retention can be forgotten.
ALTER TABLE tickets
    ADD COLUMN customer_ref text,
    ADD COLUMN closed_at    timestamptz;
CREATE INDEX tickets_customer ON tickets (customer_ref) WHERE customer_ref IS NOT NULL;
