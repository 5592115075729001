-- 0090_grants: who may call the functions of the domain files; applied after all of them.
--
-- Supabase's API roles (anon, authenticated) may call none of them: only service_role and direct
-- connections. Functions run as the caller, so RLS still applies to anyone else. Every function of
-- the orchestrator's schema is covered, whichever queue profile defined it. Safe to run again.

DO $$
DECLARE
    f regprocedure;
    r text;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
    LOOP
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

-- The schema is the orchestrator's own: Supabase's service_role (PostgREST, with `orchestrator` among
-- the exposed schemas) reaches its tables only through these grants; anon and authenticated never.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO service_role', current_schema());
        EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA %I TO service_role', current_schema());
        EXECUTE format('GRANT ALL ON ALL SEQUENCES IN SCHEMA %I TO service_role', current_schema());
    END IF;
END
$$;

-- The worker group (0005_worker_credentials.sql): the schema, and EXECUTE on exactly the functions
-- that check who acts (their first line calls assert_acting_worker). They run as their owner
-- (SECURITY DEFINER, search_path pinned by the migration runner), so the group needs no table
-- privilege at all: a worker's credential can claim, heartbeat, finish the tasks it holds and insert
-- its own logs, and nothing else. Every other function stays closed to it (PUBLIC was revoked above).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proname IN (
              'claim_next_task', 'complete_task', 'fail_task', 'worker_task_status', 'worker_held_tasks',
              'worker_heartbeat', 'insert_system_logs'
          )
          AND p.prosrc LIKE '%assert_acting_worker%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', f);
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orchestrator_worker') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO orchestrator_worker', f);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orchestrator_worker') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO orchestrator_worker', current_schema());
    END IF;
END
$$;
