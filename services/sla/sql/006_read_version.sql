-- The place in each ticket's stream of the last of dispatch's events sla took: one at or
-- before it is that event delivered again (dispatch's store replayed, the broker read from the
-- start after sla's processed ids were purged) and changes nothing. NULL: taken before this.
ALTER TABLE tickets ADD COLUMN read_version integer;
