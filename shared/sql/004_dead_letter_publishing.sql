-- A dead letter is recorded first, in the consumer's transaction (this row is the durable record),
-- and published to <topic>.dlq afterwards by a supervised task of the service, retried with
-- backoff: a missing dead-letter topic or a refused write holds up no partition.
--   published_at      when the broker took it (NULL: not yet, or refused for good)
--   publish_due       when the next attempt is due (NULL once published, or refused for good)
--   publish_attempts  attempts that failed
--   publish_error     why the last attempt failed
ALTER TABLE dead_letters
    ADD COLUMN published_at     timestamptz,
    ADD COLUMN publish_due      timestamptz,
    ADD COLUMN publish_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN publish_error    text;

-- Until now a dead letter was published before its row was written.
UPDATE dead_letters SET published_at = recorded_at;

CREATE INDEX dead_letters_unpublished ON dead_letters (publish_due) WHERE published_at IS NULL;
