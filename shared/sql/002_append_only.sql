-- The event store is append-only, for every role (the owner's included): an event, once
-- recorded, is history. Service roles are also not granted UPDATE, DELETE or TRUNCATE on it
-- (shared/privileges.py); this trigger holds even for a role that is.
CREATE FUNCTION refuse_event_change() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SD403',
        MESSAGE = format('%I.events is append-only: %s refused', TG_TABLE_SCHEMA, TG_OP);
END;
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_event_change();
CREATE TRIGGER events_never_truncated BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_event_change();
