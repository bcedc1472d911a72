-- Runs of a clock that a later run of the same clock replaced — a repeating metric's run that
-- breached and started again, a run an update or a reopen restarted — kept with their outcome.
-- The clocks table holds each clock's current run only, so without these compliance counted
-- only the last run: a repeating metric (customer_update) came out near 100 % by construction.
-- Filled from this version on; runs replaced before are only in the store (a
-- rebuild of the clock_board projection would fill them).
CREATE TABLE clock_runs (
    clock_id    text             NOT NULL,
    run         integer          NOT NULL,
    ticket_id   uuid             NOT NULL,
    metric      text             NOT NULL,
    group_id    text             NOT NULL,
    status      text             NOT NULL,
    breached_at timestamptz,
    met_at      timestamptz,
    wall_s      double precision,
    PRIMARY KEY (clock_id, run)
);
CREATE INDEX clock_runs_outcome ON clock_runs (metric, (coalesce(met_at, breached_at)));
