-- The key store of crypto-shredding (shared/keystore.py): one data key per data subject (a
-- customer), wrapped under the master key. Every schema has the table; intake's holds the keys
-- (intake meets data subjects first) and the services that decrypt are granted SELECT on it.
--   ref          the subject's pseudonym, carried in clear by every sealed field
--   lookup       HMAC of the subject's identity (customer id or contact address) under the
--                master key: finds the subject again without storing who it is; NULL once erased
--   wrapped_key  the data key, AES-GCM under the master key (NULL once erased: every field
--                sealed with it is unreadable from then on, wherever a copy of it lies)
--   closed_at    when the subject's last ticket closed (retention counts from it)
CREATE TABLE subject_keys (
    ref         text        PRIMARY KEY,
    lookup      bytea       UNIQUE,
    master_kid  text        NOT NULL,
    wrapped_key bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    closed_at   timestamptz,
    erased_at   timestamptz,
    CHECK ((wrapped_key IS NULL) = (erased_at IS NOT NULL))
);
CREATE INDEX subject_keys_closed ON subject_keys (closed_at) WHERE erased_at IS NULL;
