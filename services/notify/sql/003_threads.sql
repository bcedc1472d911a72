-- An email to the customer follows the ticket's conversation: the Message-IDs it answers
-- (References, the last of them In-Reply-To), space separated; NULL for other notices.
ALTER TABLE deliveries ADD COLUMN thread text;
