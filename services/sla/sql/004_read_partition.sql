-- The partition of dispatch's events a ticket's events arrive on (keyed by ticket): the timer
-- fires a ticket's clock only once sla has read that partition past the clock's due moment
-- (shared.readmarks), so a lagging consumer cannot make a timely response a breach. Null for
-- tickets read before this column: they wait for every partition's mark.

ALTER TABLE tickets ADD COLUMN read_partition integer;
