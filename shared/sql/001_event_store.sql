-- The event store of one service (run with search_path set to the service's schema).
-- Guarantees (docs/architecture.md):
--   * an append is one round trip: append_events() checks expected versions, inserts, bumps
--     stream versions and notifies the relay;
--   * the stored envelope lacks `streamversion` (known only here); readers add it from the
--     column, so what is published is the complete CloudEvents envelope. It is `json`, not
--     `jsonb`: stored as written (cheaper to append, published byte for byte), still queryable
--     with -> and ->>;
--   * appends are serialised by an EXCLUSIVE lock on `events`, so positions are handed out in
--     commit order and a reader following `position` never skips an event that commits later;
--   * event ids are unique, (stream_id, stream_version) is unique.

CREATE TABLE streams (
    stream_id text PRIMARY KEY,
    version   integer NOT NULL CHECK (version >= 0)
);

CREATE TABLE events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    stream_id      text        NOT NULL,
    stream_version integer     NOT NULL,
    type           text        NOT NULL,
    subject        text,
    occurred_at    timestamptz NOT NULL,
    correlation_id text        NOT NULL,
    causation_id   text,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    envelope       json        NOT NULL,
    UNIQUE (stream_id, stream_version)
);
CREATE INDEX events_subject ON events (subject, position) WHERE subject IS NOT NULL;

-- What each consumer has applied, written in the same transaction as the effects.
CREATE TABLE processed_messages (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX processed_messages_age ON processed_messages (processed_at);

-- Positions in this store's log reached by its relay and its projections.
CREATE TABLE checkpoints (
    name       text PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Messages a consumer gave up on, kept for operators (`desk dlq list/replay`).
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    key         bytea,
    value       bytea       NOT NULL,
    headers     jsonb       NOT NULL,
    reason      text        NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz,
    UNIQUE (consumer, topic, partition, "offset")
);

CREATE FUNCTION append_events(
    p_stream_ids text[],
    p_expected   integer[],   -- per event; NULL = any version, 0 = the stream must not exist
    p_event_ids  uuid[],
    p_types      text[],
    p_subjects   text[],
    p_times      timestamptz[],
    p_correlations text[],
    p_causations   text[],
    p_envelopes  text[]       -- JSON envelopes without streamversion (added when read)
) RETURNS TABLE (event_id uuid, event_position bigint, event_stream_version integer)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    ids       uuid[];
    positions bigint[];
    versions  integer[];
    moved     text[];
    stale     record;
BEGIN
    -- One appender at a time per store: positions follow commit order (see the header).
    LOCK TABLE events IN EXCLUSIVE MODE;

    -- Move each stream's version (set-based) and insert the events of the streams that moved.
    WITH grouped AS (
        SELECT u.stream_id, count(*)::integer AS n, min(u.expected) AS expected,
               bool_or(u.expected IS NULL) AS any_version
        FROM unnest(p_stream_ids, p_expected) AS u(stream_id, expected)
        GROUP BY u.stream_id
    ), any_v AS (
        INSERT INTO streams AS st (stream_id, version)
        SELECT g.stream_id, g.n FROM grouped g WHERE g.any_version
        ON CONFLICT (stream_id) DO UPDATE SET version = st.version + excluded.version
        RETURNING st.stream_id, st.version
    ), new_v AS (
        INSERT INTO streams (stream_id, version)
        SELECT g.stream_id, g.n FROM grouped g WHERE NOT g.any_version AND g.expected = 0
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING streams.stream_id, streams.version
    ), next_v AS (
        UPDATE streams st SET version = st.version + g.n
        FROM grouped g
        WHERE NOT g.any_version AND g.expected > 0
          AND st.stream_id = g.stream_id AND st.version = g.expected
        RETURNING st.stream_id, st.version
    ), base AS (
        SELECT m.stream_id, m.version - g.n AS base
        FROM (SELECT * FROM any_v UNION ALL SELECT * FROM new_v UNION ALL SELECT * FROM next_v) m
        JOIN grouped g ON g.stream_id = m.stream_id
    ), input AS (
        SELECT u.*, row_number() OVER (PARTITION BY u.stream_id ORDER BY u.ord)::integer AS seq
        FROM unnest(p_stream_ids, p_event_ids, p_types, p_subjects, p_times, p_correlations,
                    p_causations, p_envelopes)
             WITH ORDINALITY AS u(stream_id, event_id, type, subject, occurred_at, correlation_id,
                                  causation_id, envelope, ord)
    ), inserted AS (
        INSERT INTO events (event_id, stream_id, stream_version, type, subject, occurred_at,
                            correlation_id, causation_id, envelope)
        SELECT i.event_id, i.stream_id, b.base + i.seq, i.type, i.subject, i.occurred_at,
               i.correlation_id, i.causation_id, i.envelope::json
        FROM input i JOIN base b ON b.stream_id = i.stream_id
        ORDER BY i.ord
        RETURNING events.event_id, events.position, events.stream_version, events.stream_id
    )
    SELECT array_agg(x.event_id), array_agg(x.position), array_agg(x.stream_version),
           array_agg(DISTINCT x.stream_id)
    INTO ids, positions, versions, moved
    FROM inserted x;

    IF coalesce(cardinality(ids), 0) < cardinality(p_event_ids) THEN
        SELECT u.stream_id, u.expected, coalesce(st.version, 0) AS actual INTO stale
        FROM unnest(p_stream_ids, p_expected) AS u(stream_id, expected)
        LEFT JOIN streams st ON st.stream_id = u.stream_id
        WHERE NOT (u.stream_id = ANY (coalesce(moved, '{}')))
        LIMIT 1;
        RAISE EXCEPTION USING ERRCODE = 'SD409',
            MESSAGE = format('stream %s: expected version %s, actual %s',
                             stale.stream_id, stale.expected, stale.actual),
            DETAIL = json_build_object('stream_id', stale.stream_id, 'expected', stale.expected,
                                       'actual', stale.actual)::text;
    END IF;

    PERFORM pg_notify(current_schema() || '_events', '');
    RETURN QUERY SELECT * FROM unnest(ids, positions, versions);
END;
$$;

-- Test-driven time: read instead of clock_timestamp() only when DESK_CLOCK=driven.
CREATE TABLE desk_clock (value timestamptz NOT NULL);
