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
-- (tasks_in_progress_user_idx, for the per-user limit, is gone: queue_users counts them; every
-- claim paid an insert into it. native/0076_queue_indexes.sql drops it where it exists.)
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

-- A Queued task whose dependency is not Complete yet waits (`blocked`): the claim and the demand
-- never look at it. Set when it is put in (a trigger of 0020_tasks.sql, whatever the writer) and
-- cleared when its dependency completes; a dependency that Failed, was Cancelled or does not exist
-- fails it instead (cascade), so it never keeps the fleet up.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS blocked boolean NOT NULL DEFAULT false;

-- One row per user of the queue, kept exact by the statement triggers of 0020_tasks.sql (every
-- write to `tasks`, whoever makes it): the claim reads it instead of walking the tasks.
--   in_progress  the user's In Progress tasks (the per-user limit counts them all)
--   queued       the user's Queued tasks; ready: those not blocked
--   at_limit     in_progress >= the per-user limit (kept so an index can leave those users out;
--                recomputed for every user when the limit setting changes)
--   head_*       the user's oldest ready Queued task (created_at, id): the one a claim takes
-- A write that changes a user's counts locks its row until it commits, so two claims of one user
-- never run at once, and a row's values are always those of the committed tasks.
CREATE TABLE IF NOT EXISTS queue_users (
    user_id         text PRIMARY KEY,
    in_progress     integer NOT NULL DEFAULT 0 CONSTRAINT queue_users_in_progress_check CHECK (in_progress >= 0),
    queued          integer NOT NULL DEFAULT 0 CONSTRAINT queue_users_queued_check CHECK (queued >= 0),
    ready           integer NOT NULL DEFAULT 0 CONSTRAINT queue_users_ready_check CHECK (ready >= 0),
    at_limit        boolean NOT NULL DEFAULT false,
    head_created_at timestamptz,
    head_id         text
);
-- The claim: users with capacity and a ready task, by their oldest ready task. Users at their
-- limit and users with nothing ready are not in it, however many tasks they have.
CREATE INDEX IF NOT EXISTS queue_users_claimable_idx ON queue_users (head_created_at, head_id)
    WHERE head_id IS NOT NULL AND NOT at_limit;
ALTER TABLE queue_users ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON queue_users FROM %I', r);
        END IF;
    END LOOP;
END
$$;
