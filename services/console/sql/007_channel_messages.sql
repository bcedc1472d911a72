-- The HTTP channel's read side. The console is the adapter of the web and api channels: what
-- notify publishes on customer.messages for their customers (acknowledgement, agents' replies,
-- the resolution and its survey link) is kept here for the client that posted the request to
-- read back (GET /requests/{channel_message_id}/messages). Subject and text stay sealed under
-- the customer's key (shared.personal.to_column): an erasure reaches them with the key.
CREATE TABLE channel_conversations (
    channel_message_id text        PRIMARY KEY,  -- the request that opened the conversation
    client             text        NOT NULL,     -- the channel client who posted it
    channel            text        NOT NULL,
    accepted_at        timestamptz NOT NULL
);

CREATE TABLE channel_messages (
    position     bigserial   PRIMARY KEY,
    notice_key   text        NOT NULL UNIQUE,    -- notify's: a message published twice is kept once
    conversation text        NOT NULL,
    number       text        NOT NULL,
    template     text        NOT NULL,
    language     text        NOT NULL,
    subject      text        NOT NULL,           -- personal, sealed
    text         text        NOT NULL,           -- personal, sealed
    sent_at      timestamptz NOT NULL
);
CREATE INDEX channel_messages_by_conversation ON channel_messages (conversation, position);
