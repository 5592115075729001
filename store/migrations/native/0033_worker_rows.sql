-- native/0033_worker_rows: the worker rows of native/0026_worker_rows.sql with `status_since` (since
-- when the row is in its status, 0032_warm_pool_states.sql), which the Scaler's policy reads for the
-- warm pool. Same return type; otherwise unchanged. Safe to run again.

CREATE OR REPLACE FUNCTION worker_rows(p_worker_id text, p_include_terminated boolean) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT coalesce(json_agg(r ORDER BY r.created_at, r.id), '[]'::json)
    FROM (
        SELECT w.id, w.status, w.pod_id, w.gpu_type, w.created_at, w.promoted_at, w.last_heartbeat_at,
               w.terminated_at, w.termination_reason, w.trace_context, w.metadata, w.status_since,
               ip.n AS tasks_in_progress,
               CASE WHEN ip.n = 0 THEN greatest(w.promoted_at, w.last_task_finished_at) END AS idle_since,
               ip.started_at AS task_started_at,
               ip.task_type
        FROM (SELECT * FROM workers w WHERE w.id = p_worker_id
              UNION ALL
              SELECT * FROM workers w WHERE p_worker_id IS NULL AND w.status <> 'terminated'
              UNION ALL
              SELECT * FROM workers w WHERE p_worker_id IS NULL AND p_include_terminated AND w.status = 'terminated') w
        -- The oldest task it holds: when it was claimed and its type (capacity on its way, for the policy).
        CROSS JOIN LATERAL (
            SELECT count(*) AS n, min(t.claimed_at) AS started_at,
                   (array_agg(t.task_type ORDER BY t.claimed_at, t.id))[1] AS task_type
            FROM tasks t WHERE t.worker_id = w.id AND t.status = 'In Progress') ip
        WHERE p_include_terminated OR w.status <> 'terminated'
    ) r
$$;
