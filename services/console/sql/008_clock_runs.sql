-- Runs of a clock that a later run replaced (a repeating metric's quiet period that breached, a
-- run an update or a reopen restarted), kept with their outcome: compliance today counts every
-- run, not only each clock's current one (for customer_update, near 100 % by construction).
-- Filled from this version on; runs replaced before are only in the journal (a
-- rebuild of the clocks projection would fill them).
ALTER TABLE clocks ADD COLUMN run integer NOT NULL DEFAULT 1;

CREATE TABLE clock_runs (
    clock_id    text        NOT NULL,
    run         integer     NOT NULL,
    ticket_id   uuid        NOT NULL,
    metric      text        NOT NULL,
    group_id    text        NOT NULL,
    status      text        NOT NULL,
    breached_at timestamptz,
    met_at      timestamptz,
    late        boolean     NOT NULL,
    PRIMARY KEY (clock_id, run)
);
CREATE INDEX clock_runs_finished ON clock_runs ((coalesce(met_at, breached_at)));
