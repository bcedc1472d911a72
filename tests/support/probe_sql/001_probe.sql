-- Effects of the probe service's consumers. `applied` has no unique key on purpose: an event
-- applied twice shows up as two rows, which is what the exactly-once tests look for.
CREATE TABLE applied (
    consumer   text        NOT NULL,
    message_id text        NOT NULL,
    counter    text        NOT NULL,
    amount     integer     NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE tallies (
    counter text PRIMARY KEY,
    total   integer NOT NULL
);
