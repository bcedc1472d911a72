-- Events that owe a customer a notice but arrived before notify read the ticket's receipt
-- (intake's events and dispatch's or sla's travel on different topics, so either can be first).
-- The consumer keeps them here, in the transaction that processes them, and makes their notices
-- in the transaction that reads the receipt, deleting the rows. Nothing is retried or
-- dead-lettered for being early.

CREATE TABLE waiting_events (
    ticket_id uuid        NOT NULL,
    event_id  text        NOT NULL,
    trigger   text        NOT NULL,
    data      text        NOT NULL,  -- the event's data, JSON
    since     timestamptz NOT NULL,
    PRIMARY KEY (ticket_id, event_id)
);
