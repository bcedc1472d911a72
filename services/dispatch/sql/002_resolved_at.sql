-- When a ticket was last resolved: a customer's reply within the policy's reopen window reopens
-- it, a later one opens a linked follow-up ticket (routing.reopen_window). Tickets resolved
-- before this column existed fall back to their last change (updated_at).
ALTER TABLE tickets ADD COLUMN resolved_at timestamptz;
