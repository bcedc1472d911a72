-- A group's queue in one order everywhere — priority, then age, then the ticket's number (the
-- order intake received them) — so tickets queued by one batch at one moment are served
-- first-queued-first, and the heads are read from the index alone however long the queues.
DROP INDEX tickets_queue;
CREATE INDEX tickets_queue ON tickets (group_id, priority_rank, queued_at, number)
    WHERE status = 'queued';
