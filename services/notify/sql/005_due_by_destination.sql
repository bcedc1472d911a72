-- Due notices by destination: a claim walks the destinations that have notices to send (a
-- handful: the SMTP relay, the SMS provider, the webhook hosts) and takes each one's share from
-- its own range, so a backlog owed to one receiver never stands in front of the others'.
-- Built here inside the migration's transaction, which holds notify's writes while it builds; on
-- a large table, build it first by hand with CREATE INDEX CONCURRENTLY under the same name.

CREATE INDEX IF NOT EXISTS deliveries_due_by_destination ON deliveries (destination, due_at, id)
    WHERE status IN ('pending', 'sending');
