-- The newest follow-up of each ticket (intake's ticket.follow_up_opened on it): a customer's
-- reply to a ticket that has been followed up goes to that follow-up (services/intake/handlers.py),
-- not into yet another new ticket about the same problem.
ALTER TABLE tickets ADD COLUMN followed_up_by text;

-- Follow-ups opened before this column: the store holds each link, the newest last.
UPDATE tickets t SET followed_up_by = f.number
FROM (
    SELECT DISTINCT ON (subject) subject::uuid AS ticket_id,
        envelope->'data'->>'follow_up_number' AS number
    FROM events
    WHERE type = 'servicedesk.ticket.follow_up_opened.v1'
    ORDER BY subject, position DESC
) f
WHERE t.ticket_id = f.ticket_id;
