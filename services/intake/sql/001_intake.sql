-- Request numbers: one sequence per year (request_number_2026, ...), created on first use.
-- A sequence never hands out a number twice, across restarts, crashes and instances, and never
-- makes a recording transaction wait for another; a transaction that rolls back leaves a gap.
CREATE FUNCTION next_request_numbers(p_year integer, p_count integer) RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    seq text := format('request_number_%s', p_year);
BEGIN
    IF to_regclass(seq) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE SEQUENCE IF NOT EXISTS %I', seq);
        EXCEPTION WHEN unique_violation OR duplicate_table THEN
            NULL;  -- another instance created it first
        END;
    END IF;
    RETURN QUERY SELECT nextval(seq::regclass) FROM generate_series(1, p_count);
END;
$$;

-- Read model "ticket_index" (projection): every ticket intake recorded, findable by number
-- (for replies) and by channel message (for de-duplication). Rebuildable from the events.
CREATE TABLE tickets (
    ticket_id          uuid        PRIMARY KEY,
    number             text        NOT NULL UNIQUE,
    channel            text        NOT NULL,
    channel_message_id text        NOT NULL,
    received_at        timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL,
    customer_name      text        NOT NULL,
    language           text        NOT NULL,
    subject            text        NOT NULL,
    complexity         text,
    category           text,
    complaint          boolean,
    policy_version     text,
    replies            integer     NOT NULL DEFAULT 0,
    last_reply_at      timestamptz,
    UNIQUE (channel, channel_message_id)
);

-- Replies are requests too: their channel message maps to the ticket they reply to.
CREATE TABLE replies (
    channel            text NOT NULL,
    channel_message_id text NOT NULL,
    ticket_id          uuid NOT NULL,
    PRIMARY KEY (channel, channel_message_id)
);
