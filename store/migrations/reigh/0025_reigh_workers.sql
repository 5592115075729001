-- reigh/0025_reigh_workers: a worker as the Reigh app sees it, kept in step with the lifecycle row.
--
-- The orchestrator's own row (orchestrator.workers) is the truth. The app's row (public.workers)
-- is written the way the replaced orchestrator did, because the app and its claim read it: the id,
-- instance_type = GPU type, status only inactive (spawning) / active / terminated, and the finer
-- state and pod facts in metadata (orchestrator_status, runpod_id, promoted_to_active_at,
-- terminated_at, error_reason). The Headless-Wan2GP worker writes last_heartbeat and sets status
-- on every beat ('active', or 'crashed' from its guardian): liveness is read from there. Its
-- busy-ness is its In Progress tasks in public.tasks. Safe to run again.

CREATE OR REPLACE FUNCTION workers_json(p_worker_id text, p_include_terminated boolean) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(jsonb_agg(
        to_jsonb(w) || jsonb_build_object(
            -- only a heartbeat written after the lifecycle row counts: a reused id or a row of the
            -- app's own must not make a new worker look alive
            'last_heartbeat_at', CASE WHEN a.last_heartbeat >= w.created_at THEN a.last_heartbeat END,
            'reported_status', a.status,
            'tasks_in_progress', ip.n,
            'idle_since', CASE WHEN ip.n = 0 THEN greatest(w.promoted_at, lf.at) END,
            'task_started_at', ip.started_at,
            'task_type', ip.task_type)
        ORDER BY w.created_at, w.id), '[]'::jsonb)
    FROM orchestrator.workers w
    LEFT JOIN public.workers a ON a.id = w.id
    -- The oldest task it holds: when the worker started it and its type (for the policy).
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, min(t.generation_started_at) AS started_at,
               (array_agg(t.task_type ORDER BY t.generation_started_at, t.id))[1] AS task_type
        FROM public.tasks t WHERE t.worker_id = w.id AND t.status = 'In Progress') ip
    CROSS JOIN LATERAL (
        SELECT max(t.generation_processed_at) AS at FROM public.tasks t
        WHERE t.worker_id = w.id AND t.status IN ('Complete', 'Failed')) lf
    WHERE (p_worker_id IS NULL OR w.id = p_worker_id)
      AND (p_include_terminated OR w.status <> 'terminated')
$$;

-- Called after every write to a lifecycle row: upserts the app's row from it.
CREATE OR REPLACE FUNCTION queue_worker_changed(p_worker_id text) RETURNS void
LANGUAGE sql SET search_path = public, pg_temp AS $$
    INSERT INTO public.workers AS a (id, instance_type, created_at, status, metadata)
    SELECT w.id,
           coalesce(w.gpu_type, 'pending'),
           w.created_at,
           CASE w.status
               WHEN 'spawning' THEN 'inactive'
               WHEN 'terminated' THEN 'terminated'
               WHEN 'error' THEN 'inactive'
               ELSE 'active'
           END,
           jsonb_strip_nulls(jsonb_build_object(
               'orchestrator_status', w.status,
               'runpod_id', w.pod_id,
               'gpu_type', w.gpu_type,
               'ram_tier', w.metadata -> 'ram_tier_gb',
               'storage_volume', w.metadata -> 'network_volume',
               'promoted_to_active_at', w.promoted_at,
               'terminated_at', w.terminated_at,
               'error_reason', (SELECT e.reason FROM orchestrator.worker_events e
                                WHERE e.worker_id = w.id AND e.to_status = 'error' ORDER BY e.at DESC, e.id DESC LIMIT 1),
               'termination_reason', w.termination_reason,
               'managed_by', 'gpu-orchestrator'))
    FROM orchestrator.workers w
    WHERE w.id = p_worker_id
    ON CONFLICT (id) DO UPDATE
    SET instance_type = EXCLUDED.instance_type,
        -- the worker's own 'crashed' report stays visible to the app until the pod is gone
        status = CASE WHEN a.status = 'crashed' AND EXCLUDED.status <> 'terminated' THEN a.status
                      ELSE EXCLUDED.status END,
        metadata = coalesce(a.metadata, '{}'::jsonb) || EXCLUDED.metadata
$$;

-- Called with the log records the orchestrator just stored: its own records also go to the app's
-- system_logs through the app's func_insert_logs_batch (source_type orchestrator_gpu), in the
-- same transaction, so the LogShipper's spool, retries and counted drops cover both.
CREATE OR REPLACE FUNCTION queue_logs_inserted(p_records jsonb) RETURNS integer
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
    v_batch jsonb;
    v_answer jsonb;
BEGIN
    IF NOT (SELECT app_logs FROM orchestrator.reigh_settings) THEN
        RETURN 0;
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
               'timestamp', r ->> 'at',
               'source_type', 'orchestrator_gpu',
               'source_id', r ->> 'source_id',
               'log_level', r ->> 'level',
               'message', r ->> 'message',
               'worker_id', r ->> 'worker_id',
               'task_id', CASE WHEN r ->> 'task_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                               THEN r ->> 'task_id' END,
               'cycle_number', CASE WHEN (r ->> 'cycle_number')::numeric BETWEEN -2147483648 AND 2147483647
                                    THEN (r ->> 'cycle_number')::numeric::int END,
               'metadata', coalesce(r -> 'attributes', '{}'::jsonb)
                           || jsonb_strip_nulls(jsonb_build_object('log_id', r ->> 'id', 'logger', r ->> 'logger',
                                                                   'trace_id', r ->> 'trace_id'))))
           ORDER BY r ->> 'at'), '[]'::jsonb)
    INTO v_batch
    FROM jsonb_array_elements(coalesce(p_records, '[]'::jsonb)) AS e (r)
    WHERE r ->> 'source_type' = 'orchestrator';
    IF jsonb_array_length(v_batch) = 0 THEN
        RETURN 0;
    END IF;
    v_answer := public.func_insert_logs_batch(v_batch);
    RETURN coalesce((v_answer ->> 'inserted')::integer, 0);
END
$$;
