-- Read models of dispatch (projections "ticket_board" and "agent_roster"), rebuildable from its
-- events. Routing reads them inside the transaction that changes them, under the desk lock.

CREATE TABLE tickets (
    ticket_id          uuid        PRIMARY KEY,
    number             text        NOT NULL UNIQUE,
    status             text        NOT NULL,
    group_id           text        NOT NULL,
    agent_id           text,
    priority           text        NOT NULL,
    priority_rank      smallint    NOT NULL,
    language           text        NOT NULL,
    product_line       text,
    problem_type       text,
    complexity         text        NOT NULL,
    category           text        NOT NULL,
    complaint_severity text        NOT NULL,
    channel            text        NOT NULL,
    subject            text        NOT NULL,
    received_at        timestamptz NOT NULL,
    queued_at          timestamptz,
    escalation_level   integer     NOT NULL,
    responded          boolean     NOT NULL,
    satisfaction       smallint,
    version            integer     NOT NULL,
    updated_at         timestamptz NOT NULL
);
-- An agent's load: their tickets in a state that holds capacity.
CREATE INDEX tickets_load ON tickets (agent_id)
    WHERE status IN ('assigned', 'accepted', 'in_progress', 'waiting_for_customer');
-- A group's queue: by priority, then age.
CREATE INDEX tickets_queue ON tickets (group_id, priority_rank, queued_at) WHERE status = 'queued';

-- Round robin continues after the agent most recently assigned in each group.
CREATE TABLE group_cursors (
    group_id text PRIMARY KEY,
    agent_id text NOT NULL
);

CREATE TABLE agents (
    agent_id   text        PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL,
    groups     text[]      NOT NULL,
    skills     text[]      NOT NULL,
    languages  text[]      NOT NULL,
    capacity   integer     NOT NULL,
    on_shift   boolean     NOT NULL,
    version    integer     NOT NULL,
    updated_at timestamptz NOT NULL
);
