-- notify's tables. "tickets": what notify keeps of each ticket (customer contact, current group
-- and agent), written by its consumer with the events it processes. "deliveries": one row per
-- notice, keyed by its de-duplication key (cause event id, recipient, template) and inserted in
-- the consumer's transaction *before* anything is sent; the delivery worker claims due rows with
-- FOR UPDATE SKIP LOCKED. A row in 'sending' whose due_at (its lease) has passed belonged to a
-- sender that died: it is sent again, with the same idempotency key.

CREATE TABLE tickets (
    ticket_id uuid PRIMARY KEY,
    facts     text NOT NULL  -- TicketFacts, JSON
);

CREATE TABLE deliveries (
    id             bigserial   PRIMARY KEY,
    notice_key     text        NOT NULL UNIQUE,
    ticket_id      uuid        NOT NULL,
    number         text        NOT NULL,
    cause_event_id text        NOT NULL,
    recipient      text        NOT NULL,
    channel        text,
    address        text,
    template       text        NOT NULL,
    language       text        NOT NULL,
    subject        text        NOT NULL,
    body           text        NOT NULL,
    policy_version text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts       integer     NOT NULL DEFAULT 0,
    due_at         timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL,
    finished_at    timestamptz
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE status IN ('pending', 'sending');
CREATE INDEX deliveries_ticket ON deliveries (ticket_id);
