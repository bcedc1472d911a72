-- The links between a ticket and its follow-ups, as the agents' screens show them: the number a
-- follow-up follows up (intake's receipt, ticket.received's follows_up), and the follow-ups a
-- ticket has had (intake's ticket.follow_up_opened on it), oldest first.
ALTER TABLE tickets ADD COLUMN follows_up text;
ALTER TABLE tickets ADD COLUMN follow_ups text[] NOT NULL DEFAULT '{}';

-- Tickets recorded before these columns: the timeline holds both events with their facts.
UPDATE tickets t SET follows_up = e.facts->>'follows_up'
FROM timeline e
WHERE e.ticket_id = t.ticket_id AND e.kind = 'ticket.received'
    AND e.facts->>'follows_up' IS NOT NULL;

UPDATE tickets t SET follow_ups = opened.numbers
FROM (
    SELECT ticket_id, array_agg(facts->>'follow_up_number' ORDER BY position) AS numbers
    FROM timeline
    WHERE kind = 'ticket.follow_up_opened'
    GROUP BY ticket_id
) opened
WHERE t.ticket_id = opened.ticket_id;
