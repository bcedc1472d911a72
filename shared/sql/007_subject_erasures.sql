-- How many times a subject's key was destroyed, or the subject a lookup finds changed, in this
-- schema's subject_keys: intake keeps the subjects it has met (shared/keystore.py) and reads
-- this count instead of their rows; a count that moved since means an erasure somewhere (an
-- operator's, retention's, another instance's), and intake forgets every subject it kept. A
-- trigger keeps it, so no way of erasing — SQL by hand included — can leave a kept key in use.
CREATE TABLE subject_erasures (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    erased bigint  NOT NULL
);
INSERT INTO subject_erasures (erased) VALUES (0);

CREATE FUNCTION count_subject_erasure() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE format('UPDATE %I.subject_erasures SET erased = erased + 1', TG_TABLE_SCHEMA);
    RETURN NULL;
END;
$$;

CREATE TRIGGER subject_keys_erased AFTER UPDATE ON subject_keys
    FOR EACH ROW
    WHEN (OLD.wrapped_key IS NOT NULL AND NEW.wrapped_key IS NULL
          OR OLD.lookup IS DISTINCT FROM NEW.lookup
          OR OLD.ref IS DISTINCT FROM NEW.ref)
    EXECUTE FUNCTION count_subject_erasure();
CREATE TRIGGER subject_keys_deleted AFTER DELETE ON subject_keys
    FOR EACH ROW EXECUTE FUNCTION count_subject_erasure();
CREATE TRIGGER subject_keys_truncated AFTER TRUNCATE ON subject_keys
    FOR EACH STATEMENT EXECUTE FUNCTION count_subject_erasure();
