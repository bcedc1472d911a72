-- sla's tables. "clocks" is the projection of its clock streams (rebuildable from its events);
-- a clock's due_at is its durable timer: the worker claims due rows with FOR UPDATE SKIP LOCKED.
-- "tickets" is what sla keeps of dispatch's ticket events (targets and recipients), written by
-- its consumer in the same transaction that marks those events processed.

CREATE TABLE tickets (
    ticket_id       uuid        PRIMARY KEY,
    number          text        NOT NULL,
    complexity      text        NOT NULL,
    priority        text        NOT NULL,
    channel         text        NOT NULL,
    complaint       boolean     NOT NULL,
    major_complaint boolean     NOT NULL,
    received_at     timestamptz NOT NULL,
    group_id        text        NOT NULL,
    agent_id        text,
    waiting         boolean     NOT NULL
);

CREATE TABLE clocks (
    clock_id    text             PRIMARY KEY,
    ticket_id   uuid             NOT NULL,
    number      text             NOT NULL,
    metric      text             NOT NULL,
    run         integer          NOT NULL,
    status      text             NOT NULL,
    group_id    text             NOT NULL,
    started_at  timestamptz      NOT NULL,
    deadline    timestamptz,
    due_at      timestamptz,
    warned      double precision NOT NULL,
    level       integer          NOT NULL,
    breached_at timestamptz,
    met_at      timestamptz,
    elapsed_s   double precision NOT NULL,
    wall_s      double precision,
    state       text             NOT NULL,  -- the folded SlaClock, JSON
    version     integer          NOT NULL
);
CREATE INDEX clocks_due ON clocks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX clocks_ticket ON clocks (ticket_id);
CREATE INDEX clocks_outcome ON clocks (metric, (coalesce(met_at, breached_at)));
