-- 0031_worker_rows: list_worker_rows, what the stores' list_workers calls: the profile's
-- worker_rows, built as json.
--
-- list_workers (0030) builds the same rows as jsonb, which at 1,000 rows was most of the Scaler's
-- read of them; it stays as it is (an applied migration never changes, and a file run again must
-- not change a function's return type). Safe to run again.

CREATE OR REPLACE FUNCTION list_worker_rows(p_include_terminated boolean DEFAULT false) RETURNS json
LANGUAGE sql STABLE AS $$ SELECT worker_rows(NULL, p_include_terminated) $$;

-- Only the orchestrator (and Supabase's service_role) may read every worker row: never PUBLIC, the
-- API roles or a worker's own credential. (0090_grants.sql does the same for every function of a new
-- database; these two may come to a database where it already ran.)
DO $$
DECLARE
    f regprocedure;
    r text;
BEGIN
    FOREACH f IN ARRAY ARRAY['list_worker_rows(boolean)'::regprocedure, 'worker_rows(text, boolean)'::regprocedure] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', f, r);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', f);
        END IF;
    END LOOP;
END
$$;
