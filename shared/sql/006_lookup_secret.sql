-- The secret that turns an identity into subject_keys.lookup (shared/keystore.py), kept apart
-- from the master key so the master key can be rotated: identities are not stored, so lookups
-- made under a lost secret could never be made again. One row, wrapped under the master key
-- named by master_kid; made on first use (as the HKDF of the master key that made the lookups
-- before this table existed) and rewrapped, never changed, by `desk master-key rotate`.
CREATE TABLE lookup_secret (
    one            boolean     PRIMARY KEY DEFAULT true CHECK (one),
    master_kid     text        NOT NULL,
    wrapped_secret bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The master keys data keys are wrapped under, found without reading the table: a service
-- checks at start that it was given every one (shared/keystore.py, KeyStore.unconfigured).
CREATE INDEX subject_keys_master ON subject_keys (master_kid) WHERE wrapped_key IS NOT NULL;
