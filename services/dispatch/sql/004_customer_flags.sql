-- issue 16: the exceptions path. A customer flagged abusive or unreasonable (flag_customer) is
-- flagged on their later tickets too, by the key intake gives customers across tickets; a
-- ticket's open specialist request names the group it waits on.
ALTER TABLE tickets ADD COLUMN customer_key text;
ALTER TABLE tickets ADD COLUMN customer_flag text;
ALTER TABLE tickets ADD COLUMN specialist_group text;

CREATE TABLE customer_flags (
    customer_key text        PRIMARY KEY,
    reason       text        NOT NULL,
    number       text        NOT NULL,
    actor        text        NOT NULL,
    flagged_at   timestamptz NOT NULL
);
