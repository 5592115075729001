-- reigh/0026_worker_rows: the worker rows as one `json` value, which the Scaler reads every cycle.
--
-- Same rows as workers_json (0025), built as json rather than jsonb (cheaper to build at 1,000
-- rows). The stores read it through list_worker_rows (0031_worker_rows.sql). Safe to run again.

CREATE OR REPLACE FUNCTION worker_rows(p_worker_id text, p_include_terminated boolean) RETURNS json
LANGUAGE sql STABLE SET search_path = public, pg_temp AS $$
    SELECT coalesce(json_agg(r ORDER BY r.created_at, r.id), '[]'::json)
    FROM (
        SELECT w.id, w.status, w.pod_id, w.gpu_type, w.created_at, w.promoted_at,
               -- only a heartbeat written after the lifecycle row counts: a reused id or a row of the
               -- app's own must not make a new worker look alive
               CASE WHEN a.last_heartbeat >= w.created_at THEN a.last_heartbeat END AS last_heartbeat_at,
               w.terminated_at, w.termination_reason, w.trace_context, w.metadata,
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
