-- Whether a ticket's last resolution was the system's (a question left unanswered): a reply
-- received before it, read after it, reopens it; one before a person's resolution does not.
ALTER TABLE tickets ADD COLUMN resolved_by_system boolean NOT NULL DEFAULT false;
