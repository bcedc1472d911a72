-- A rule's at_most counts a customer's notices of its template over its window
-- (services/notify/limits.py): by the pseudonym of the customer a notice went to, in clear as
-- in every event (never an address). Rows from before it have none and count for no one.
ALTER TABLE deliveries ADD COLUMN customer_ref text;
CREATE INDEX IF NOT EXISTS deliveries_customer ON deliveries (customer_ref, template, created_at)
    WHERE customer_ref IS NOT NULL;
