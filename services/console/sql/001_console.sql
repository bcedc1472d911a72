-- The console's schema. "journal" keeps the public events the console read, exactly as
-- published; every read model below but "commands" and "dead_letters" is a projection of it
-- (shared.projection: applied in the transaction that journals the events, caught up at start,
-- rebuildable). Personal fields (customer, subject, description, what people wrote) are written
-- and read only through services/console/personal.py.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE journal (
    position       bigserial   PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    topic          text        NOT NULL,
    type           text        NOT NULL,
    stream_id      text        NOT NULL,
    stream_version integer     NOT NULL,
    subject        text,
    occurred_at    timestamptz NOT NULL,
    correlation_id text,
    causation_id   text,
    envelope       text        NOT NULL
);

-- Every ticket as the public events tell it (projection "tickets").
CREATE TABLE tickets (
    ticket_id            uuid        PRIMARY KEY,
    number               text        NOT NULL UNIQUE,
    status               text        NOT NULL,  -- received (triaged, not yet routed), then dispatch's
    group_id             text,
    agent_id             text,
    priority             text        NOT NULL,
    complexity           text,
    category             text,
    complaint            boolean     NOT NULL DEFAULT false,
    channel              text,
    language             text,
    product_line         text,
    problem_type         text,
    customer_key         text,       -- personal: whose history (customer id, else email or phone)
    customer             text,       -- personal: name and contacts, as personal.py writes them
    subject              text        NOT NULL DEFAULT '',  -- personal
    description          text,       -- personal
    received_at          timestamptz NOT NULL,
    queued_at            timestamptz,
    first_response_at    timestamptz,
    first_responder      text,
    resolved_at          timestamptz,
    resolved_by          text,
    closed_at            timestamptz,
    escalation_level     integer     NOT NULL DEFAULT 0,
    reopened             integer     NOT NULL DEFAULT 0,
    satisfaction         smallint,
    satisfaction_comment text,       -- personal
    satisfied_at         timestamptz,
    sla                  text        NOT NULL DEFAULT 'ok',  -- ok, at_risk, breached (its clocks)
    sla_deadline         timestamptz,
    updated_at           timestamptz NOT NULL
);
-- The list: newest first, under each filter the API offers (keyset paging on received_at, number),
-- each index read in that order so a page stops after its rows however many match.
CREATE INDEX tickets_recent ON tickets (received_at DESC, number DESC);
CREATE INDEX tickets_by_status ON tickets (status, received_at DESC, number DESC);
CREATE INDEX tickets_by_group ON tickets (group_id, received_at DESC, number DESC);
CREATE INDEX tickets_by_group_status ON tickets (group_id, status, received_at DESC, number DESC);
CREATE INDEX tickets_by_agent ON tickets (agent_id, received_at DESC, number DESC);
CREATE INDEX tickets_by_customer ON tickets (customer_key, received_at DESC);
CREATE INDEX tickets_by_complexity ON tickets (complexity, received_at DESC, number DESC);
CREATE INDEX tickets_by_sla ON tickets (sla, received_at DESC, number DESC);
CREATE INDEX tickets_subject ON tickets USING gin (subject gin_trgm_ops);
-- The dashboard: open tickets, queues, what was resolved and rated lately.
CREATE INDEX tickets_open ON tickets (group_id, status) WHERE status <> 'closed';
CREATE INDEX tickets_queued ON tickets (group_id, queued_at) WHERE status = 'queued';
CREATE INDEX tickets_resolved ON tickets (resolved_by, resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX tickets_answered ON tickets (first_responder, first_response_at)
    WHERE first_response_at IS NOT NULL;
CREATE INDEX tickets_rated ON tickets (satisfied_at) WHERE satisfied_at IS NOT NULL;

-- What happened to each ticket, from every service (projection "tickets").
CREATE TABLE timeline (
    ticket_id uuid        NOT NULL,
    position  bigint      NOT NULL,  -- the journal's
    at        timestamptz NOT NULL,
    service   text        NOT NULL,
    kind      text        NOT NULL,
    actor     text,
    facts     jsonb       NOT NULL,  -- what the event says, personal fields left out
    said      text,                  -- personal: a message, note, question, reply, comment
    PRIMARY KEY (ticket_id, position)
);

-- SLA clocks (projection "clocks"): at risk, breached, compliance.
CREATE TABLE clocks (
    clock_id    text        PRIMARY KEY,
    ticket_id   uuid        NOT NULL,
    metric      text        NOT NULL,
    group_id    text        NOT NULL,
    status      text        NOT NULL,  -- running, paused, breached, met, stopped
    warned      real        NOT NULL DEFAULT 0,
    deadline    timestamptz,
    breached_at timestamptz,
    met_at      timestamptz,
    late        boolean     NOT NULL DEFAULT false
);
CREATE INDEX clocks_ticket ON clocks (ticket_id);
CREATE INDEX clocks_finished ON clocks ((coalesce(met_at, breached_at)));

-- The directory as dispatch tells it (projection "agents"); loads are counted from tickets.
CREATE TABLE agents (
    agent_id   text        PRIMARY KEY,
    name       text        NOT NULL,
    role       text        NOT NULL,
    groups     text[]      NOT NULL,
    capacity   integer     NOT NULL,
    on_shift   boolean     NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Requests, rejections, refusals and notices per minute (projection "traffic").
CREATE TABLE traffic (
    minute timestamptz NOT NULL,
    kind   text        NOT NULL,  -- request, reply, request_rejected, command_refused, notice_sent, notice_failed
    reason text        NOT NULL DEFAULT '',
    count  integer     NOT NULL,
    PRIMARY KEY (minute, kind, reason)
);

-- Commands the console sent for people: its own record (not a projection), so that
-- GET /api/commands/{id} answers only the sender, "pending" until dispatch decides.
CREATE TABLE commands (
    command_id   text        PRIMARY KEY,
    kind         text        NOT NULL,  -- ticket, agent
    target       text        NOT NULL,
    type         text        NOT NULL,
    actor        text        NOT NULL,
    submitted_at timestamptz NOT NULL
);

-- dispatch's decision on each of those (projection "decisions"): accepted when an event names
-- the command as its cause, refused when a rejection names it.
CREATE TABLE decisions (
    command_id text        PRIMARY KEY,
    outcome    text        NOT NULL,  -- accepted, refused
    reason     text,
    detail     text,
    decided_at timestamptz NOT NULL
);

-- Dead letters seen on the <topic>.dlq topics, per service (not a projection: the dead-letter
-- topics are the record, and each service's own dead_letters table the durable one).
CREATE TABLE dead_letters_seen (
    service     text        NOT NULL,
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    reason      text        NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX dead_letters_seen_recent ON dead_letters_seen (recorded_at);
