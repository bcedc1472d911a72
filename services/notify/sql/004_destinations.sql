-- Where a notice goes, as far as one receiver can hold sends up: the SMTP relay ('email'), the
-- SMS provider ('sms') or a webhook's host. Computed once, as the row is written, from columns
-- in clear (a customer's sealed address is an email's or a text's, whose destination is the
-- channel's): the delivery worker leases at most its share of each destination.

ALTER TABLE deliveries ADD COLUMN destination text GENERATED ALWAYS AS (
    CASE channel
        WHEN 'webhook' THEN coalesce(
            lower(substring(address FROM '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)')), '')
        ELSE channel
    END
) STORED;
