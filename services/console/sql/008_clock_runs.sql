-- Runs of a clock that a later run replaced (a repeating metric's quiet period that breached, a
-- run an update or a reopen restarted), kept with their outcome: compliance today counts every
-- run, not only each clock's current one (for customer_update, near 100 % by construction).
-- Filled from this version on; runs replaced before are only in the journal (a
-- rebuild of the clocks projection would fill them).
ALTER TABLE clocks ADD COLUMN run integer NOT NULL DEFAULT 1;
-- Who answered for the run when it was met or breached (sla's events name them): the agents'
-- review counts each agent's clocks met in time (sop.md: steps done correctly).
ALTER TABLE clocks ADD COLUMN agent_id text;

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
    agent_id    text,
    PRIMARY KEY (clock_id, run)
);
CREATE INDEX clock_runs_finished ON clock_runs ((coalesce(met_at, breached_at)));
CREATE INDEX clock_runs_by_agent ON clock_runs (agent_id, (coalesce(met_at, breached_at)));
CREATE INDEX clocks_by_agent ON clocks (agent_id, (coalesce(met_at, breached_at)));

-- An erased customer's channel messages are deleted by their tickets' numbers (personal.forget).
CREATE INDEX channel_messages_by_number ON channel_messages (number);
