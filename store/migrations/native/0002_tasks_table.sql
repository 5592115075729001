-- native/0002_tasks_table: the native profile's queue table (the app puts tasks in, workers claim).
--
-- Safe to run again (IF NOT EXISTS everywhere).

-- Tasks: put in by the app, claimed by workers through claim_next_task().
CREATE TABLE IF NOT EXISTS tasks (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    task_type   text NOT NULL,
    status      text NOT NULL DEFAULT 'Queued'
                CONSTRAINT tasks_status_check
                CHECK (status IN ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled')),
    user_id     text NOT NULL,
    params      jsonb NOT NULL DEFAULT '{}'::jsonb,
    depends_on  text,                      -- id of a task that must be Complete first
    worker_id   text,                      -- the worker holding or last holding it
    attempts    integer NOT NULL DEFAULT 0, -- claims so far
    created_at  timestamptz NOT NULL DEFAULT now(),
    claimed_at  timestamptz,
    finished_at timestamptz,
    error       text,
    result      jsonb
);
-- The claim walks Queued tasks oldest first.
CREATE INDEX IF NOT EXISTS tasks_queued_idx ON tasks (created_at, id) WHERE status = 'Queued';
-- demand_snapshot groups Queued tasks by user.
CREATE INDEX IF NOT EXISTS tasks_queued_user_idx ON tasks (user_id, depends_on) WHERE status = 'Queued';
-- The per-user limit counts In Progress tasks of one user (claim and demand).
CREATE INDEX IF NOT EXISTS tasks_in_progress_user_idx ON tasks (user_id) WHERE status = 'In Progress';
-- A worker's tasks: requeue on death, tasks_in_progress and idle_since of list_workers.
CREATE INDEX IF NOT EXISTS tasks_worker_idx ON tasks (worker_id, status, finished_at);
-- task_counts and list_tasks(status).
CREATE INDEX IF NOT EXISTS tasks_status_idx ON tasks (status, created_at);

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;

-- Supabase's API roles get nothing on the queue either (they exist only on Supabase).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON tasks FROM %I', r);
        END IF;
    END LOOP;
END
$$;
