-- The group a ticket's specialist request waits on, as dispatch keeps it (Ticket.specialist_group):
-- set by ticket.specialist_requested (its to_group), cleared by ticket.findings_provided, nothing
-- else touches it. Its members (and supervisors) see the ticket in the console, to read the
-- question and answer it (provide_findings), until the findings are provided.
ALTER TABLE tickets ADD COLUMN specialist_group text;

-- Requests made before this column: the timeline holds every event of each ticket with its
-- journal position (the order the projection applies them) and to_group in facts, so a ticket
-- waits on the to_group of its last request if no findings came after it.
UPDATE tickets t SET specialist_group = last.facts->>'to_group'
FROM (
    SELECT DISTINCT ON (ticket_id) ticket_id, kind, facts
    FROM timeline
    WHERE kind IN ('ticket.specialist_requested', 'ticket.findings_provided')
    ORDER BY ticket_id, position DESC
) last
WHERE t.ticket_id = last.ticket_id AND last.kind = 'ticket.specialist_requested';

-- The list of a specialist group's member: the tickets asked of their groups (few) beside their
-- groups' own; the planner reads them with this index and the group index together.
CREATE INDEX tickets_asked ON tickets (specialist_group, received_at DESC, number DESC)
    WHERE specialist_group IS NOT NULL;
