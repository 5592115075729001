-- 0090_grants: who may call the functions of the domain files; applied after all of them.
--
-- Supabase's API roles (anon, authenticated) may call none of them: only service_role and direct
-- connections. Functions run as the caller, so RLS still applies to anyone else. A function added
-- to a domain file must be added to this list too (tests/integration/test_store_migrations.py
-- checks that every function of the schema is covered). Safe to run again.

DO $$
DECLARE
    f regprocedure;
    r text;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proname IN (
              -- leases
              'db_now', 'check_epoch', 'lease_json', 'acquire_leader_lease', 'release_leader_lease',
              'get_leader_lease',
              -- tasks
              'queue_setting', 'configure_queue', 'insert_tasks', 'claim_next_task', 'complete_task',
              'fail_task', 'requeue_worker_tasks', 'demand_snapshot', 'get_task', 'list_tasks', 'task_counts',
              'notify_task_change', 'explain_worker_tasks',
              -- workers
              'workers_json', 'get_worker', 'list_workers', 'create_worker', 'set_worker_pod',
              'transition_worker', 'worker_heartbeat', 'list_worker_events',
              -- decisions
              'record_decision', 'set_decision_spawned', 'list_decisions',
              -- logs
              'is_timestamptz', 'insert_system_logs', 'list_system_logs', 'explain_silences')
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
