-- The customer of a ticket waiting for their reply is reminded once per question, after the
-- policy's routing.remind_unanswered_after (services/dispatch/closing.py).
ALTER TABLE tickets ADD COLUMN reminded boolean NOT NULL DEFAULT false;
