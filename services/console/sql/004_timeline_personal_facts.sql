-- The timeline copied a resolution's cause, actions and compensation (a complaint's solution)
-- and a classification's customer_flag into facts in clear, where an erasure does not reach.
-- They move where the projection now keeps them: the solution into said (which an erasure
-- overwrites; already 'erased' for an erased customer), the flag nowhere.
UPDATE timeline SET
    said = CASE WHEN said = 'erased' THEN said ELSE concat_ws(E'\n', said,
        'cause: ' || (facts->>'cause'), 'actions: ' || (facts->>'actions'),
        'compensation: ' || (facts->>'compensation')) END,
    facts = facts - 'cause' - 'actions' - 'compensation'
WHERE kind = 'ticket.resolved' AND facts ?| ARRAY['cause', 'actions', 'compensation'];

UPDATE timeline SET facts = facts - 'customer_flag'
WHERE kind = 'ticket.classified' AND facts ? 'customer_flag';
