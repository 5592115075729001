-- A Reigh-shaped app database: the schema and SQL functions that the Reigh app (banodoco/reigh-app)
-- keeps in its Supabase project and that its Headless-Wan2GP workers call, written from the
-- contract in /work/shared/reigh-contract.md (not copied from the app's migrations).
--
-- Purpose: a fixture for the orchestrator's `reigh` profile, its demo and its tests. It must stand
-- in for a live Reigh database the orchestrator cannot change, so it reproduces the app's
-- behaviour, bugs included (the claim has no SKIP LOCKED; see claim_next_task_service_role).
--
-- Applies to a fresh, plain Postgres (13+): no Supabase schemas (auth, storage), no extensions, no
-- pg_cron. Safe to apply twice (IF NOT EXISTS, CREATE OR REPLACE, guarded DO blocks).
--
-- Simplified against a live Reigh database (the orchestrator must not rely on what is left out):
--   * users.id does not reference auth.users; credits is a plain column (the app keeps it from a
--     credits ledger through triggers); no row level security policies, no updated_at triggers.
--   * task_types has only id, name, run_type, created_at.
--   * The model a task needs is read as params->>'model_name', else params->>'model' (the app
--     looks in more places, e.g. orchestrator_details); see claim_next_task_service_role.
--   * auto_fail_stale_tasks() uses a fixed limit (v_stale_limit, 2 hours) and is not scheduled.
--   * The shapes of the jsonb answers (heartbeat, logs batch) are this fixture's own.
--   * One object the app does not have: _reigh_fixture_insert_log(), shared by the two log writers.

-- Supabase's API roles, so that the grants below read as they do in the app. Roles are
-- cluster-wide: create them only when missing (and survive a concurrent creator).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another session created it meanwhile
            END;
        END IF;
    END LOOP;
END
$$;

DO $$
BEGIN
    CREATE TYPE public.task_status AS ENUM ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled');
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;

-- ------------------------------------------------------------------------------------------------
-- Tables
-- ------------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS public.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text,
    email text,
    api_keys jsonb,
    settings jsonb,  -- settings->'ui'->'generationMethods'->>'inCloud': false opts out of cloud runs
    credits numeric NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS public.projects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    settings jsonb
);

CREATE INDEX IF NOT EXISTS idx_projects_user_id ON public.projects (user_id);

CREATE TABLE IF NOT EXISTS public.task_types (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL UNIQUE,
    run_type text NOT NULL DEFAULT 'gpu' CHECK (run_type IN ('gpu', 'api')),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.workers (
    id text PRIMARY KEY,
    instance_type text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz,  -- NULL until the first heartbeat
    status text DEFAULT 'active',
    metadata jsonb DEFAULT '{}'::jsonb,
    current_model text,
    -- The app's migrations declare CHECK (status IN ('active','inactive','terminated')), but the
    -- worker's guardian writes 'crashed' through func_worker_heartbeat_with_logs, which a strict
    -- check would reject (and the requeue of a crashed worker's tasks would never run). A live
    -- Reigh database that works therefore has a looser check; this one accepts 'crashed' as well.
    -- An orchestrator must still write only 'active', 'inactive' and 'terminated' (contract).
    CONSTRAINT workers_status_check CHECK (status IN ('active', 'inactive', 'terminated', 'crashed'))
);

CREATE TABLE IF NOT EXISTS public.tasks (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_type text NOT NULL,
    params jsonb NOT NULL,
    status public.task_status NOT NULL DEFAULT 'Queued',
    dependant_on uuid[],  -- every listed task must be Complete before this one is ready
    output_location text,  -- the result's URL; the error text on failure
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz,
    project_id uuid NOT NULL REFERENCES public.projects (id) ON DELETE CASCADE,
    generation_started_at timestamptz,
    generation_processed_at timestamptz,
    worker_id text REFERENCES public.workers (id) ON DELETE SET NULL,
    attempts int NOT NULL DEFAULT 0,
    error_message text,
    result_data jsonb,
    generation_created boolean,
    idempotency_key text
);

CREATE INDEX IF NOT EXISTS idx_tasks_status_created_at ON public.tasks (status, created_at);
CREATE INDEX IF NOT EXISTS idx_tasks_project_id_status ON public.tasks (project_id, status);
CREATE INDEX IF NOT EXISTS idx_tasks_status_worker_id ON public.tasks (status, worker_id);
CREATE INDEX IF NOT EXISTS idx_tasks_dependant_on ON public.tasks USING gin (dependant_on);
CREATE UNIQUE INDEX IF NOT EXISTS idx_tasks_idempotency_key ON public.tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS public.system_logs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    source_type text NOT NULL,  -- orchestrator_gpu, orchestrator_api, worker, ...
    source_id text NOT NULL,
    log_level text NOT NULL CHECK (log_level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    message text NOT NULL,
    task_id uuid,
    worker_id text,
    cycle_number int,
    metadata jsonb DEFAULT '{}'::jsonb
);

CREATE INDEX IF NOT EXISTS idx_system_logs_timestamp ON public.system_logs ("timestamp");
CREATE INDEX IF NOT EXISTS idx_system_logs_worker_id ON public.system_logs (worker_id, "timestamp");
CREATE INDEX IF NOT EXISTS idx_system_logs_task_id ON public.system_logs (task_id);

-- ------------------------------------------------------------------------------------------------
-- Functions
-- ------------------------------------------------------------------------------------------------

-- The run type of a task type: 'gpu' or 'api'; 'gpu' for a type not in task_types. The functions
-- below join task_types with the same default instead of calling it per row (0.9 s vs 0.04 s over
-- 100,000 queued tasks).
CREATE OR REPLACE FUNCTION public.get_task_run_type(p_task_type text)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce((SELECT tt.run_type FROM public.task_types tt WHERE tt.name = p_task_type), 'gpu');
$$;

-- The per-user limit of In Progress tasks (tasks of an '%orchestrator%' type do not count) is 5:
-- the literal appears in each function below, as it does in the app.

-- Demand: per eligible user (credits > 0, cloud allowed, fewer than 5 In Progress), how many tasks
-- could run now (or, with p_include_active, run now or are running), summed.
-- Note: a user already at 5 is not eligible, so with p_include_active their 5 running tasks count
-- for nothing; and in_progress counts every run type. Both as in the contract.
CREATE OR REPLACE FUNCTION public.count_eligible_tasks_service_role(
    p_include_active boolean DEFAULT false,
    p_run_type text DEFAULT NULL
)
RETURNS integer
LANGUAGE sql STABLE
AS $$
    WITH in_progress AS (
        SELECT p.user_id, count(*) AS n
        FROM public.tasks t JOIN public.projects p ON p.id = t.project_id
        WHERE t.status = 'In Progress' AND t.task_type NOT ILIKE '%orchestrator%'
        GROUP BY p.user_id
    ),
    ready AS (
        SELECT p.user_id, count(*) AS n
        FROM public.tasks t
        JOIN public.projects p ON p.id = t.project_id
        LEFT JOIN public.task_types tt ON tt.name = t.task_type  -- = get_task_run_type(), as a join
        WHERE t.status = 'Queued'
          AND (p_run_type IS NULL OR coalesce(tt.run_type, 'gpu') = p_run_type)
          AND (t.dependant_on IS NULL OR NOT EXISTS (  -- every parent exists and is Complete
              SELECT 1 FROM unnest(t.dependant_on) AS d (parent_id)
              LEFT JOIN public.tasks parent ON parent.id = d.parent_id
              WHERE parent.status IS DISTINCT FROM 'Complete'))
        GROUP BY p.user_id
    ),
    per_user AS (
        SELECT coalesce(i.n, 0) AS in_progress, coalesce(r.n, 0) AS ready_queued
        FROM public.users u
        LEFT JOIN in_progress i ON i.user_id = u.id
        LEFT JOIN ready r ON r.user_id = u.id
        WHERE u.credits > 0
          AND coalesce((u.settings -> 'ui' -> 'generationMethods' ->> 'inCloud')::boolean, true)
    )
    SELECT coalesce(sum(
        CASE WHEN p_include_active THEN least(5, in_progress + ready_queued)
             ELSE greatest(0, least(5 - in_progress, ready_queued)) END), 0)::integer
    FROM per_user
    WHERE in_progress < 5;
$$;

-- Why queued tasks wait. Each Queued task of the run type lands in exactly one column, checked in
-- this order: blocked_by_settings (its user has no credits or opted out of cloud runs),
-- blocked_by_deps (a parent is not Complete), then per user the first (5 - in_progress) ready
-- tasks are claimable_now and the rest blocked_by_capacity. The columns sum to total_queued.
CREATE OR REPLACE FUNCTION public.count_queued_tasks_breakdown_service_role(p_run_type text DEFAULT NULL)
RETURNS TABLE (
    claimable_now int,
    blocked_by_capacity int,
    blocked_by_deps int,
    blocked_by_settings int,
    total_queued int
)
LANGUAGE sql STABLE
AS $$
    WITH queued AS (
        SELECT
            p.user_id,
            (u.credits > 0
             AND coalesce((u.settings -> 'ui' -> 'generationMethods' ->> 'inCloud')::boolean, true)) AS user_ok,
            (t.dependant_on IS NULL OR NOT EXISTS (
                SELECT 1 FROM unnest(t.dependant_on) AS d (parent_id)
                LEFT JOIN public.tasks parent ON parent.id = d.parent_id
                WHERE parent.status IS DISTINCT FROM 'Complete')) AS deps_ok
        FROM public.tasks t
        JOIN public.projects p ON p.id = t.project_id
        JOIN public.users u ON u.id = p.user_id
        LEFT JOIN public.task_types tt ON tt.name = t.task_type
        WHERE t.status = 'Queued'
          AND (p_run_type IS NULL OR coalesce(tt.run_type, 'gpu') = p_run_type)
    ),
    ready_per_user AS (
        SELECT
            q.user_id,
            count(*) AS ready,
            greatest(0, 5 - (SELECT count(*) FROM public.tasks t JOIN public.projects p ON p.id = t.project_id
                              WHERE p.user_id = q.user_id AND t.status = 'In Progress'
                                AND t.task_type NOT ILIKE '%orchestrator%')) AS free_slots
        FROM queued q
        WHERE q.user_ok AND q.deps_ok
        GROUP BY q.user_id
    )
    SELECT
        coalesce((SELECT sum(least(r.ready, r.free_slots)) FROM ready_per_user r), 0)::int,
        coalesce((SELECT sum(r.ready - least(r.ready, r.free_slots)) FROM ready_per_user r), 0)::int,
        (SELECT count(*) FROM queued q WHERE q.user_ok AND NOT q.deps_ok)::int,
        (SELECT count(*) FROM queued q WHERE NOT q.user_ok)::int,
        (SELECT count(*) FROM queued)::int;
$$;

-- One row per user with at least one Queued or In Progress task. queued_tasks counts every Queued
-- task (any run type, dependencies or not); in_progress_tasks counts as the per-user limit does.
CREATE OR REPLACE FUNCTION public.per_user_capacity_stats_service_role()
RETURNS TABLE (
    user_id uuid,
    credits numeric,
    queued_tasks bigint,
    in_progress_tasks bigint,
    allows_cloud boolean,
    at_limit boolean
)
LANGUAGE sql STABLE
AS $$
    WITH counts AS (
        SELECT
            u.id,
            u.credits,
            count(*) FILTER (WHERE t.status = 'Queued') AS queued,
            count(*) FILTER (WHERE t.status = 'In Progress' AND t.task_type NOT ILIKE '%orchestrator%') AS in_progress,
            coalesce((u.settings -> 'ui' -> 'generationMethods' ->> 'inCloud')::boolean, true) AS allows_cloud
        FROM public.users u
        JOIN public.projects p ON p.user_id = u.id
        JOIN public.tasks t ON t.project_id = p.id
        WHERE t.status IN ('Queued', 'In Progress')
        GROUP BY u.id, u.credits, u.settings
    )
    SELECT c.id, c.credits, c.queued, c.in_progress, c.allows_cloud, c.in_progress >= 5
    FROM counts c
    ORDER BY c.id;
$$;

-- Claim the next ready task of an eligible user for p_worker_id.
--
-- Faithful to the app, bugs included: the candidate is chosen WITHOUT a row lock (no FOR UPDATE, no
-- SKIP LOCKED) and the UPDATE does not re-check the status, so two concurrent claims can both return
-- the same task (the later one overwrites worker_id), and two claims for one user can overshoot the
-- per-user limit of 5. The worker's status is not looked at: a worker the orchestrator marked
-- 'inactive' or 'terminated' still gets tasks. The task's worker_id references workers(id), so the
-- worker row must exist (the first heartbeat creates it).
--
-- Model preference, simplified: a task's model is params->>'model_name', else params->>'model'.
-- Tasks that have waited more than p_max_task_wait_minutes come first (oldest first); then tasks
-- whose model equals workers.current_model; then the oldest. With p_same_model_only and a known
-- current_model, only tasks of that model (or overdue ones) are claimed. p_include_active is
-- accepted for the app's signature and has no effect on the claim.
CREATE OR REPLACE FUNCTION public.claim_next_task_service_role(
    p_worker_id text,
    p_include_active boolean DEFAULT false,
    p_run_type text DEFAULT NULL,
    p_same_model_only boolean DEFAULT false,
    p_max_task_wait_minutes int DEFAULT 5
)
RETURNS TABLE (task_id uuid, params jsonb, task_type text, project_id uuid, user_id uuid)
LANGUAGE plpgsql
AS $$
DECLARE
    v_model text;
    v_task_id uuid;
    v_user_id uuid;
BEGIN
    SELECT w.current_model INTO v_model FROM public.workers w WHERE w.id = p_worker_id;

    WITH eligible_users AS (
        SELECT u.id
        FROM public.users u
        WHERE u.credits > 0
          AND coalesce((u.settings -> 'ui' -> 'generationMethods' ->> 'inCloud')::boolean, true)
          AND (SELECT count(*) FROM public.tasks t JOIN public.projects p ON p.id = t.project_id
                WHERE p.user_id = u.id AND t.status = 'In Progress'
                  AND t.task_type NOT ILIKE '%orchestrator%') < 5
    ),
    candidates AS (
        SELECT
            t.id,
            p.user_id,
            t.created_at,
            t.created_at < now() - make_interval(mins => p_max_task_wait_minutes) AS overdue,
            coalesce(t.params ->> 'model_name', t.params ->> 'model') IS NOT DISTINCT FROM v_model
                AND v_model IS NOT NULL AS same_model
        FROM public.tasks t
        JOIN public.projects p ON p.id = t.project_id
        JOIN eligible_users e ON e.id = p.user_id
        LEFT JOIN public.task_types tt ON tt.name = t.task_type
        WHERE t.status = 'Queued'
          AND (p_run_type IS NULL OR coalesce(tt.run_type, 'gpu') = p_run_type)
          AND (t.dependant_on IS NULL OR NOT EXISTS (
              SELECT 1 FROM unnest(t.dependant_on) AS d (parent_id)
              LEFT JOIN public.tasks parent ON parent.id = d.parent_id
              WHERE parent.status IS DISTINCT FROM 'Complete'))
    )
    SELECT c.id, c.user_id INTO v_task_id, v_user_id
    FROM candidates c
    WHERE NOT p_same_model_only OR v_model IS NULL OR c.same_model OR c.overdue
    ORDER BY c.overdue DESC, c.same_model DESC, c.created_at, c.id
    LIMIT 1;  -- no FOR UPDATE SKIP LOCKED: the app's claim has none

    IF v_task_id IS NULL THEN
        RETURN;
    END IF;

    RETURN QUERY
    UPDATE public.tasks t
    SET status = 'In Progress',
        worker_id = p_worker_id,
        generation_started_at = now(),
        updated_at = now()
    WHERE t.id = v_task_id  -- no "AND status = 'Queued'": see the note above
    RETURNING t.id, t.params, t.task_type, t.project_id, v_user_id;
END
$$;

-- One log object (keys: timestamp, log_level or level, message, task_id, worker_id, cycle_number,
-- metadata, source_type, source_id) into system_logs; the defaults fill what it lacks. Raises on a
-- bad object (the callers count and skip). Not part of the app's contract: a helper of this file.
CREATE OR REPLACE FUNCTION public._reigh_fixture_insert_log(
    log jsonb,
    default_source_type text,
    default_source_id text,
    default_worker_id text,
    default_task_id uuid
)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF jsonb_typeof(log) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'a log entry must be a JSON object, not %', jsonb_typeof(log);
    END IF;
    INSERT INTO public.system_logs
        ("timestamp", source_type, source_id, log_level, message, task_id, worker_id, cycle_number, metadata)
    VALUES (
        coalesce((log ->> 'timestamp')::timestamptz, now()),
        coalesce(log ->> 'source_type', default_source_type),
        coalesce(log ->> 'source_id', default_source_id),
        upper(coalesce(log ->> 'log_level', log ->> 'level', 'INFO')),
        log ->> 'message',
        coalesce((log ->> 'task_id')::uuid, default_task_id),
        coalesce(log ->> 'worker_id', default_worker_id),
        (log ->> 'cycle_number')::int,
        coalesce(log -> 'metadata', '{}'::jsonb)
    );
END
$$;

-- The worker's heartbeat (every ~20 s, and once with 'crashed' from its guardian).
-- Sets last_heartbeat and status = status_param on every beat (overwriting whatever status an
-- orchestrator wrote), merges the VRAM figures given into metadata, creates the row with
-- instance_type 'external' when missing, and stores logs_param as source_type 'worker' logs
-- (current_task_id_param is the task of a line that names none; a bad line is skipped and
-- counted, it never fails the beat). With status_param 'crashed': the worker's In Progress tasks
-- with attempts < 3 go back to Queued with attempts + 1 and worker_id / generation_started_at
-- cleared; those with attempts >= 3 are Failed.
CREATE OR REPLACE FUNCTION public.func_worker_heartbeat_with_logs(
    worker_id_param text,
    vram_total_mb_param int DEFAULT NULL,
    vram_used_mb_param int DEFAULT NULL,
    logs_param jsonb DEFAULT '[]'::jsonb,
    current_task_id_param uuid DEFAULT NULL,
    status_param text DEFAULT 'active'
)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_vram jsonb := jsonb_strip_nulls(jsonb_build_object(
        'vram_total_mb', vram_total_mb_param,
        'vram_used_mb', vram_used_mb_param,
        'vram_timestamp', CASE WHEN vram_total_mb_param IS NOT NULL OR vram_used_mb_param IS NOT NULL
                               THEN extract(epoch FROM now()) END));
    v_log jsonb;
    v_logs_inserted int := 0;
    v_logs_skipped int := 0;
    v_requeued int := 0;
    v_failed int := 0;
BEGIN
    INSERT INTO public.workers AS w (id, instance_type, status, last_heartbeat, metadata)
    VALUES (worker_id_param, 'external', status_param, now(), v_vram)
    ON CONFLICT (id) DO UPDATE
    SET last_heartbeat = now(),
        status = excluded.status,
        metadata = coalesce(w.metadata, '{}'::jsonb) || v_vram;

    IF jsonb_typeof(logs_param) = 'array' THEN
        FOR v_log IN SELECT value FROM jsonb_array_elements(logs_param) LOOP
            BEGIN
                PERFORM public._reigh_fixture_insert_log(
                    v_log, 'worker', worker_id_param, worker_id_param, current_task_id_param);
                v_logs_inserted := v_logs_inserted + 1;
            EXCEPTION WHEN OTHERS THEN
                v_logs_skipped := v_logs_skipped + 1;
            END;
        END LOOP;
    END IF;

    IF status_param = 'crashed' THEN
        UPDATE public.tasks
        SET status = 'Failed',
            error_message = 'Worker ' || worker_id_param || ' crashed; max attempts reached',
            output_location = 'Worker ' || worker_id_param || ' crashed; max attempts reached',
            generation_processed_at = now(),
            updated_at = now()
        WHERE worker_id = worker_id_param AND status = 'In Progress' AND attempts >= 3;
        GET DIAGNOSTICS v_failed = ROW_COUNT;

        UPDATE public.tasks
        SET status = 'Queued',
            attempts = attempts + 1,
            worker_id = NULL,
            generation_started_at = NULL,
            updated_at = now()
        WHERE worker_id = worker_id_param AND status = 'In Progress' AND attempts < 3;
        GET DIAGNOSTICS v_requeued = ROW_COUNT;
    END IF;

    RETURN jsonb_build_object(
        'success', true,
        'worker_id', worker_id_param,
        'status', status_param,
        'logs_inserted', v_logs_inserted,
        'logs_skipped', v_logs_skipped,
        'tasks_requeued', v_requeued,
        'tasks_failed', v_failed);
END
$$;

-- A batch of log objects (the replaced orchestrator's logs, source_type 'orchestrator_gpu', ...).
-- Each object is inserted on its own: a bad one (no message, an unknown level, a malformed uuid or
-- timestamp, no source) is skipped and counted. Returns {inserted, errors, error_details[]}.
CREATE OR REPLACE FUNCTION public.func_insert_logs_batch(logs jsonb)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    v_log jsonb;
    v_index int := 0;
    v_inserted int := 0;
    v_errors int := 0;
    v_details jsonb := '[]'::jsonb;
BEGIN
    IF jsonb_typeof(logs) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'func_insert_logs_batch expects a JSON array, not %', coalesce(jsonb_typeof(logs), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    FOR v_log IN SELECT value FROM jsonb_array_elements(logs) LOOP
        BEGIN
            PERFORM public._reigh_fixture_insert_log(v_log, NULL, NULL, NULL, NULL);
            v_inserted := v_inserted + 1;
        EXCEPTION WHEN OTHERS THEN
            v_errors := v_errors + 1;
            v_details := v_details || jsonb_build_object('index', v_index, 'error', SQLERRM);
        END;
        v_index := v_index + 1;
    END LOOP;
    RETURN jsonb_build_object('inserted', v_inserted, 'errors', v_errors, 'error_details', v_details);
END
$$;

-- Fails tasks stuck In Progress for longer than the limit (the app schedules it every 5 minutes
-- with pg_cron; nothing schedules it here). Returns how many it failed.
CREATE OR REPLACE FUNCTION public.auto_fail_stale_tasks()
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    -- Longer than any real generation; a fixture choice, the app's own figure may differ.
    v_stale_limit CONSTANT interval := interval '2 hours';
    v_failed int;
BEGIN
    UPDATE public.tasks
    SET status = 'Failed',
        error_message = 'Task timed out: In Progress for more than ' || v_stale_limit::text,
        output_location = 'Task timed out: In Progress for more than ' || v_stale_limit::text,
        generation_processed_at = now(),
        updated_at = now()
    WHERE status = 'In Progress'
      AND coalesce(generation_started_at, updated_at, created_at) < now() - v_stale_limit;
    GET DIAGNOSTICS v_failed = ROW_COUNT;
    RETURN v_failed;
END
$$;

-- As in Supabase: the *_service_role functions and the worker/log functions are for the service
-- role only; the API roles of end users cannot call them.
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'public.count_eligible_tasks_service_role(boolean, text)',
        'public.count_queued_tasks_breakdown_service_role(text)',
        'public.per_user_capacity_stats_service_role()',
        'public.claim_next_task_service_role(text, boolean, text, boolean, int)',
        'public.func_worker_heartbeat_with_logs(text, int, int, jsonb, uuid, text)',
        'public.func_insert_logs_batch(jsonb)',
        'public.auto_fail_stale_tasks()',
        'public._reigh_fixture_insert_log(jsonb, text, text, text, uuid)'
    ] LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', f);
    END LOOP;
END
$$;
