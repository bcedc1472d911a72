-- The customer's replies dispatch has acted on: per ticket, the intake stream position of the
-- newest. processed_messages forgets an id after processed_retention (14 days by default); a
-- reply delivered again after that — offsets reset, or a group's offsets expired while
-- dispatch was down — would otherwise resume or reopen the ticket as if the customer had just
-- written. Bookkeeping like processed_messages, written in the same transaction as what the
-- reply did; not a projection, so a rebuild of the ticket board keeps it.
CREATE TABLE replies_read (
    ticket_id uuid    PRIMARY KEY,
    position  integer NOT NULL
);
