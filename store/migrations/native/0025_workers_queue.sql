-- native/0025_workers_queue: how the native queue sees a worker, and its hooks.
--
-- A profile defines the same functions over its own queue: workers_json (a worker row with what
-- the queue knows of it: tasks in progress, idle since, heartbeat), queue_worker_changed (called
-- after every write to a worker row) and queue_logs_inserted (called with the log records just
-- inserted). Safe to run again.

-- When the worker's last task left In Progress (completed, failed, requeued), kept on its row by
-- the tasks' UPDATE trigger (0020_tasks.sql), so idle_since is never recomputed from all the tasks
-- it ever ran. Filled once from the tasks for rows that predate it.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS last_task_finished_at timestamptz;
UPDATE workers w
SET last_task_finished_at = (SELECT max(t.finished_at) FROM tasks t WHERE t.worker_id = w.id)
WHERE w.last_task_finished_at IS NULL AND w.status <> 'terminated';

-- Worker rows with derived fields: tasks_in_progress, and idle_since (promotion or last finished
-- task, whichever is later) when it holds no task. The live ones are read through the partial
-- index workers_live_idx (0060_indexes.sql), however many terminated rows are kept.
CREATE OR REPLACE FUNCTION workers_json(p_worker_id text, p_include_terminated boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(
        to_jsonb(w) - 'last_task_finished_at' || jsonb_build_object(
            'tasks_in_progress', ip.n,
            'idle_since', CASE WHEN ip.n = 0 THEN greatest(w.promoted_at, w.last_task_finished_at) END,
            'task_started_at', ip.started_at,
            'task_type', ip.task_type)
        ORDER BY w.created_at, w.id), '[]'::jsonb)
    FROM (SELECT * FROM workers w WHERE w.id = p_worker_id
          UNION ALL
          SELECT * FROM workers w WHERE p_worker_id IS NULL AND w.status <> 'terminated'
          UNION ALL
          SELECT * FROM workers w WHERE p_worker_id IS NULL AND p_include_terminated AND w.status = 'terminated') w
    -- The oldest task it holds: when it was claimed and its type, so the policy can tell a worker
    -- about to free up (capacity on its way) from one that will be busy for long.
    CROSS JOIN LATERAL (
        SELECT count(*) AS n, min(t.claimed_at) AS started_at,
               (array_agg(t.task_type ORDER BY t.claimed_at, t.id))[1] AS task_type
        FROM tasks t WHERE t.worker_id = w.id AND t.status = 'In Progress') ip
    WHERE p_include_terminated OR w.status <> 'terminated'
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

-- The native queue keeps nothing of a worker outside the orchestrator's own row. A worker that
-- ended (terminated, error) wakes the Scaler: a decision could change.
CREATE OR REPLACE FUNCTION queue_worker_changed(p_worker_id text) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('task_changes', 'worker')
    FROM workers WHERE id = p_worker_id AND status IN ('terminated', 'error')
$$;

-- The native profile's logs live only in system_logs.
CREATE OR REPLACE FUNCTION queue_logs_inserted(p_records jsonb) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
