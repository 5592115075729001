-- reigh/0033_warm_pool_workers: the app's row of a worker parked in the warm pool, and the worker
-- rows with since when each is in its status.
--
-- The app's strict check allows only active / inactive / terminated, so a worker that is
-- stopping, stopped or resuming is written `inactive` with the finer state in
-- metadata.orchestrator_status (as `spawning` always was). A resumed worker's own heartbeat sets
-- `active` again (func_worker_heartbeat_with_logs writes status_param on every beat). A `crashed`
-- its guardian wrote while the orchestrator stopped its pod is an expected end of that process, not
-- a crash of the resumed worker: it is replaced by `inactive` once the orchestrator writes the row
-- stopped or resuming (a crash reported after that write stays, so a resume that fails is seen).
-- Otherwise as reigh/0025_reigh_workers.sql and reigh/0026_worker_rows.sql. Safe to run again.

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
               WHEN 'stopping' THEN 'inactive'
               WHEN 'stopped' THEN 'inactive'
               WHEN 'resuming' THEN 'inactive'
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
        -- the worker's own 'crashed' report stays visible to the app until the pod is gone or parked
        status = CASE WHEN a.status = 'crashed'
                           AND EXCLUDED.metadata ->> 'orchestrator_status' NOT IN ('terminated', 'stopped', 'resuming')
                      THEN a.status
                      ELSE EXCLUDED.status END,
        metadata = coalesce(a.metadata, '{}'::jsonb) || EXCLUDED.metadata
$$;

-- The worker rows of reigh/0026_worker_rows.sql with `status_since` (0032_warm_pool_states.sql),
-- which the Scaler's policy reads for the warm pool. Same return type; otherwise unchanged.
CREATE OR REPLACE FUNCTION worker_rows(p_worker_id text, p_include_terminated boolean) RETURNS json
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(json_agg(r ORDER BY r.created_at, r.id), '[]'::json)
    FROM (
        SELECT w.id, w.status, w.pod_id, w.gpu_type, w.created_at, w.promoted_at,
               -- only a heartbeat written after the lifecycle row counts: a reused id or a row of the
               -- app's own must not make a new worker look alive
               CASE WHEN a.last_heartbeat >= w.created_at THEN a.last_heartbeat END AS last_heartbeat_at,
               w.terminated_at, w.termination_reason, w.trace_context, w.metadata, w.status_since,
               a.status AS reported_status,
               ip.n AS tasks_in_progress,
               CASE WHEN ip.n = 0 THEN greatest(w.promoted_at, lf.at) END AS idle_since,
               ip.started_at AS task_started_at,
               ip.task_type
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
    ) r
$$;
