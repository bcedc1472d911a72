-- Request numbers without objects made at run time: intake's role creates nothing, so each
-- year's sequence is made here, by the owner, for 2020 to 2100 (existing ones are kept).
-- A request whose numbering year is outside them draws from request_number_other: still
-- unique within its year, though not restarting at 1 (received_at is bounded, so none should).
DO $$
BEGIN
    FOR year IN 2020..2100 LOOP
        EXECUTE format('CREATE SEQUENCE IF NOT EXISTS request_number_%s', year);
    END LOOP;
END;
$$;
CREATE SEQUENCE request_number_other;

CREATE OR REPLACE FUNCTION next_request_numbers(p_year integer, p_count integer)
RETURNS SETOF bigint
LANGUAGE sql
SET search_path FROM CURRENT
AS $$
    SELECT nextval(coalesce(to_regclass(format('request_number_%s', p_year)),
                            'request_number_other'::regclass))
    FROM generate_series(1, p_count);
$$;
