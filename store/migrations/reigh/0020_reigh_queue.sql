-- reigh/0020_reigh_queue: the Reigh app's queue as the orchestrator sees it.
--
-- Demand comes from the app's own functions (count_eligible_tasks_service_role,
-- count_queued_tasks_breakdown_service_role): its eligibility rules (credits, cloud opt-out, the
-- per-user limit of 5, dependency arrays, run types) are never re-implemented here. A dead
-- worker's tasks go back with the app's semantics. Task reads map the app's rows onto the
-- orchestrator's task shape for status and explain. Each function runs with search_path public
-- (the app's functions, called from here, name their tables unqualified) and names the
-- orchestrator's own tables with their schema. The app's queue has no trigger of ours (nothing is
-- created in public), so the Scaler wakes on its cycle, not on NOTIFY. Safe to run again.

CREATE OR REPLACE FUNCTION configure_reigh(p_run_type text, p_app_logs boolean) RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    IF coalesce(p_run_type, '') = '' THEN
        RAISE EXCEPTION 'queue.run_type must not be empty' USING ERRCODE = '22023';
    END IF;
    UPDATE orchestrator.reigh_settings SET run_type = p_run_type, app_logs = coalesce(p_app_logs, true)
    WHERE run_type IS DISTINCT FROM p_run_type OR app_logs IS DISTINCT FROM coalesce(p_app_logs, true);
    RETURN true;
END
$$;

-- The decision's inputs: the app's claimable count (what its claim would hand out now) and its
-- breakdown of what is blocked and why. p_per_user_limit is the native profile's knob: the app
-- has its own limit.
CREATE OR REPLACE FUNCTION demand_snapshot(p_per_user_limit integer DEFAULT NULL) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    WITH s AS (SELECT run_type FROM orchestrator.reigh_settings),
    b AS (SELECT * FROM public.count_queued_tasks_breakdown_service_role((SELECT run_type FROM s)))
    SELECT jsonb_build_object(
        'queued', coalesce((SELECT total_queued FROM b), 0),
        'claimable', public.count_eligible_tasks_service_role(false, (SELECT run_type FROM s)),
        'in_progress', (SELECT count(*) FROM public.tasks t
                        WHERE t.status = 'In Progress'
                          AND public.get_task_run_type(t.task_type) = (SELECT run_type FROM s)),
        'eligible_with_active', public.count_eligible_tasks_service_role(true, (SELECT run_type FROM s)),
        'blocked_by_capacity', coalesce((SELECT blocked_by_capacity FROM b), 0),
        'blocked_by_deps', coalesce((SELECT blocked_by_deps FROM b), 0),
        'blocked_by_settings', coalesce((SELECT blocked_by_settings FROM b), 0),
        'run_type', (SELECT run_type FROM s),
        'taken_at', extract(epoch FROM now()))
$$;

-- A dead or terminated worker's In Progress tasks, the way the app's crashed-worker path does it:
-- attempts + 1 and back to Queued, or Failed with an error_message once attempts reached the limit.
CREATE OR REPLACE FUNCTION requeue_worker_tasks(p_worker_id text) RETURNS integer
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_limit bigint := orchestrator.queue_setting('max_task_attempts', 3);
    v_failed integer;
    v_requeued integer;
BEGIN
    UPDATE public.tasks
    SET status = 'Failed',
        error_message = format('worker %s was lost while running it; %s attempts reached', p_worker_id, attempts),
        output_location = format('worker %s was lost while running it; %s attempts reached', p_worker_id, attempts),
        generation_processed_at = now(),
        updated_at = now()
    WHERE worker_id = p_worker_id AND status = 'In Progress' AND attempts >= v_limit;
    GET DIAGNOSTICS v_failed = ROW_COUNT;
    UPDATE public.tasks
    SET status = 'Queued', attempts = attempts + 1, worker_id = NULL, generation_started_at = NULL,
        updated_at = now()
    WHERE worker_id = p_worker_id AND status = 'In Progress' AND attempts < v_limit;
    GET DIAGNOSTICS v_requeued = ROW_COUNT;
    RETURN v_failed + v_requeued;
END
$$;

-- An app task in the orchestrator's task shape (store.base.TaskRow).
CREATE OR REPLACE FUNCTION reigh_task_json(t public.tasks) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT jsonb_build_object(
        'id', t.id::text,
        'task_type', t.task_type,
        'status', t.status::text,
        'user_id', coalesce((SELECT p.user_id::text FROM public.projects p WHERE p.id = t.project_id), ''),
        'params', t.params,
        'depends_on', t.dependant_on[1]::text,
        'dependant_on', to_jsonb(t.dependant_on),
        'worker_id', t.worker_id,
        'attempts', t.attempts,
        'created_at', t.created_at,
        'claimed_at', t.generation_started_at,
        'finished_at', CASE WHEN t.status IN ('Complete', 'Failed', 'Cancelled') THEN t.generation_processed_at END,
        'error', t.error_message,
        'result', CASE WHEN jsonb_typeof(t.result_data) = 'object' THEN t.result_data END,
        'output_location', t.output_location,
        'project_id', t.project_id::text)
$$;

CREATE OR REPLACE FUNCTION get_task(p_task_id text) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT orchestrator.reigh_task_json(t) FROM public.tasks t WHERE t.id::text = p_task_id
$$;

CREATE OR REPLACE FUNCTION list_tasks(p_status text DEFAULT NULL, p_limit integer DEFAULT 10000) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(orchestrator.reigh_task_json(s) ORDER BY s.created_at, s.id), '[]'::jsonb)
    FROM (SELECT * FROM public.tasks t WHERE p_status IS NULL OR t.status::text = p_status
          ORDER BY t.created_at, t.id LIMIT p_limit) s
$$;

CREATE OR REPLACE FUNCTION task_counts() RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
    FROM (SELECT status::text AS status, count(*) AS n FROM public.tasks GROUP BY status) s
$$;

CREATE OR REPLACE FUNCTION explain_worker_tasks(p_worker_id text, p_limit integer DEFAULT 1000) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(orchestrator.reigh_task_json(s) ORDER BY s.created_at, s.id), '[]'::jsonb)
    FROM (SELECT * FROM public.tasks t WHERE t.worker_id = p_worker_id
          ORDER BY t.created_at, t.id LIMIT p_limit) s
$$;

-- The app puts its tasks in itself; the orchestrator never writes new rows into its queue.
CREATE OR REPLACE FUNCTION insert_tasks(p_tasks jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'queue profile reigh: tasks are put in by the app (public.tasks), not by the orchestrator'
        USING ERRCODE = '0A000';
END
$$;

-- The newest Queued task's creation time: one index lookup ((status, created_at)), polled between
-- cycles by a Scaler that has no NOTIFY to wake it, so a new task is seen within the poll interval.
CREATE OR REPLACE FUNCTION queue_marker() RETURNS text
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT max(created_at)::text FROM public.tasks WHERE status = 'Queued'
$$;
