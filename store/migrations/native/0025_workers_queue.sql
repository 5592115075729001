-- native/0025_workers_queue: how the native queue sees a worker, and its hooks.
--
-- A profile defines the same functions over its own queue: workers_json (a worker row with what
-- the queue knows of it: tasks in progress, idle since, heartbeat), queue_worker_changed (called
-- after every write to a worker row) and queue_logs_inserted (called with the log records just
-- inserted). Safe to run again.

-- Worker rows with derived fields: tasks_in_progress, and idle_since (promotion or last finished
-- task, whichever is later) when it holds no task.
CREATE OR REPLACE FUNCTION workers_json(p_worker_id text, p_include_terminated boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(
        to_jsonb(w) || jsonb_build_object(
            'tasks_in_progress', ip.n,
            'idle_since', CASE WHEN ip.n = 0 THEN greatest(w.promoted_at, lf.at) END)
        ORDER BY w.created_at, w.id), '[]'::jsonb)
    FROM workers w
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM tasks t WHERE t.worker_id = w.id AND t.status = 'In Progress') ip
    CROSS JOIN LATERAL (
        SELECT max(t.finished_at) AS at FROM tasks t WHERE t.worker_id = w.id AND t.finished_at IS NOT NULL) lf
    WHERE (p_worker_id IS NULL OR w.id = p_worker_id)
      AND (p_include_terminated OR w.status <> 'terminated')
$$;

-- One UPDATE: last_heartbeat_at and a metadata merge, never the status. Returns the status.
CREATE OR REPLACE FUNCTION worker_heartbeat(p_worker_id text, p_metadata jsonb DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$
    SELECT assert_acting_worker(p_worker_id);  -- a worker beats only for itself (0005_worker_credentials)
    UPDATE workers
    SET last_heartbeat_at = now(), metadata = metadata || coalesce(p_metadata, '{}'::jsonb)
    WHERE id = p_worker_id
    RETURNING status
$$;

-- The native queue keeps nothing of a worker outside the orchestrator's own row.
CREATE OR REPLACE FUNCTION queue_worker_changed(p_worker_id text) RETURNS void
LANGUAGE sql AS $$ SELECT NULL::void $$;

-- The native profile's logs live only in system_logs.
CREATE OR REPLACE FUNCTION queue_logs_inserted(p_records jsonb) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
