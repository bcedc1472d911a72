-- What each command said (a SHA-256 of its canonical JSON, without the sender and the send
-- time): the same id again from the same caller is the same command only when it says the same;
-- saying something else is refused (command_id_reused). Rows from before have none and are
-- taken as the same.
ALTER TABLE commands ADD COLUMN digest bytea;
