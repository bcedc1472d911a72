-- The HTTP channel (POST /requests): each Idempotency-Key a channel client sent, and the channel
-- message id it was answered with. A retry with the same key and body — after a restart too —
-- gets the same id and publishes nothing; the same key with another body is refused. The key is
-- the client's own: two clients' keys never meet. Keys are forgotten after
-- console_idempotency_retention (by accepted_at). The fingerprint is a SHA-256 of the body as
-- sent (canonical JSON), never the body: it holds the customer's contact data.
CREATE TABLE channel_requests (
    client             text        NOT NULL,
    idempotency_key    text        NOT NULL,
    channel_message_id text        NOT NULL,
    channel            text        NOT NULL,
    fingerprint        text        NOT NULL,
    accepted_at        timestamptz NOT NULL,
    PRIMARY KEY (client, idempotency_key)
);
CREATE INDEX channel_requests_accepted_at ON channel_requests (accepted_at);
