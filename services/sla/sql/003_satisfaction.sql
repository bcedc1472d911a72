-- The customers' survey scores (dispatch's satisfaction_recorded), with the ticket's group and
-- agent when they rated: CSAT per day and group in reports and gauges. Written by sla's consumer
-- in the transaction that marks the event processed, like "tickets".

CREATE TABLE satisfaction (
    ticket_id   uuid        PRIMARY KEY,
    number      text        NOT NULL,
    group_id    text        NOT NULL,
    agent_id    text,
    score       smallint    NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX satisfaction_recorded ON satisfaction (recorded_at);
