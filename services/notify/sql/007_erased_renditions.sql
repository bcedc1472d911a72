-- A notice to the desk's people about a sealed customer's ticket keeps, beside its sealed text,
-- what it says if the customer is erased before it goes out (services/notify/sealing.py): the
-- same template rendered with "erased" for every personal field, so it holds nothing of theirs.
ALTER TABLE deliveries ADD COLUMN erased_subject text, ADD COLUMN erased_body text;
