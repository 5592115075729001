-- reigh/0002_reigh_settings: the reigh profile's own settings, and a check that the app is there.
--
-- The reigh profile serves an existing Reigh app's queue: its tables and functions in `public`
-- (see shared/reigh-contract.md) are read and written by the functions of this folder, never
-- created, altered or dropped. Everything created here is in the orchestrator's schema.
-- Safe to run again.

DO $$
DECLARE
    missing text[] := ARRAY[]::text[];
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['public.tasks', 'public.workers', 'public.projects', 'public.users', 'public.system_logs'] LOOP
        IF to_regclass(r) IS NULL THEN
            missing := missing || r;
        END IF;
    END LOOP;
    FOREACH r IN ARRAY ARRAY[
        'public.count_eligible_tasks_service_role(boolean,text)',
        'public.count_queued_tasks_breakdown_service_role(text)',
        'public.get_task_run_type(text)',
        'public.func_insert_logs_batch(jsonb)'] LOOP
        IF to_regprocedure(r) IS NULL THEN
            missing := missing || r;
        END IF;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'queue profile reigh: this database has no Reigh app schema (missing %)',
            array_to_string(missing, ', ')
            USING ERRCODE = '42P01',
                  HINT = 'point DATABASE_URL at the Reigh app''s database, or use queue.profile: native';
    END IF;
END
$$;

-- One row: which run type the fleet serves, and whether the orchestrator's logs also go to the
-- app's system_logs. Written by configure_reigh() from the orchestrator's config.
CREATE TABLE IF NOT EXISTS reigh_settings (
    singleton boolean PRIMARY KEY DEFAULT true CONSTRAINT reigh_settings_one_row CHECK (singleton),
    run_type  text NOT NULL DEFAULT 'gpu',
    app_logs  boolean NOT NULL DEFAULT true
);
INSERT INTO reigh_settings (singleton) VALUES (true) ON CONFLICT (singleton) DO NOTHING;
ALTER TABLE reigh_settings ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON reigh_settings FROM %I', r);
        END IF;
    END LOOP;
END
$$;
