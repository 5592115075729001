-- native/0020_tasks: the native queue: inserting, claiming, finishing and counting tasks.
--
-- Each function is defined in exactly one file, its domain's (see 0010_leases.sql for how the
-- stores call them); 0090_grants.sql sets the privileges of all of them. Safe to run again, and
-- over the earlier layout (0002_functions, 0003_demand_snapshot, 0900_explain): CREATE OR REPLACE
-- with unchanged signatures, IF NOT EXISTS.

CREATE OR REPLACE FUNCTION insert_tasks(p_tasks jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    WITH src AS MATERIALIZED (
        SELECT coalesce(r.id, gen_random_uuid()::text) AS id, r.task_type, r.user_id,
               coalesce(r.params, '{}'::jsonb) AS params, r.depends_on,
               coalesce(r.created_at, now()) AS created_at, r.ord
        FROM ROWS FROM (jsonb_to_recordset(p_tasks) AS (
                 id text, task_type text, user_id text, params jsonb, depends_on text, created_at timestamptz))
             WITH ORDINALITY AS r (id, task_type, user_id, params, depends_on, created_at, ord)
    ), ins AS (
        INSERT INTO tasks (id, task_type, user_id, params, depends_on, created_at)
        SELECT id, task_type, user_id, params, depends_on, created_at FROM src
        ON CONFLICT (id) DO NOTHING  -- a retried insert with the same ids is a no-op
        RETURNING id
    )
    SELECT coalesce(jsonb_agg(src.id ORDER BY src.ord), '[]'::jsonb) FROM src
$$;

CREATE OR REPLACE FUNCTION claim_next_task(p_worker_id text, p_task_types text[] DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_limit bigint := queue_setting('per_user_concurrency_limit', 3);
    v_worker_status text;
    v_task tasks;
    v_in_progress bigint;
    v_skipped_users text[] := '{}';
    v_all_types boolean := p_task_types IS NULL OR cardinality(p_task_types) = 0;
BEGIN
    PERFORM assert_acting_worker(p_worker_id);  -- a worker claims only for itself (0005_worker_credentials)
    -- Only an active worker claims. FOR SHARE: a concurrent transition waits for this claim to
    -- commit, so once `draining` is committed no new claim can start for this worker.
    SELECT status INTO v_worker_status FROM workers WHERE id = p_worker_id FOR SHARE;
    IF v_worker_status IS DISTINCT FROM 'active' THEN
        RETURN NULL;
    END IF;
    LOOP
        SELECT t.* INTO v_task
        FROM tasks t
        WHERE t.status = 'Queued'
          AND (v_all_types OR t.task_type = ANY (p_task_types))
          AND t.user_id <> ALL (v_skipped_users)
          AND (t.depends_on IS NULL
               OR EXISTS (SELECT 1 FROM tasks d WHERE d.id = t.depends_on AND d.status = 'Complete'))
          AND (SELECT count(*) FROM tasks p WHERE p.user_id = t.user_id AND p.status = 'In Progress') < v_limit
        ORDER BY t.created_at, t.id
        LIMIT 1
        FOR UPDATE OF t SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        -- Serialize claims of one user; the lock is held until commit, and the count below is a
        -- new statement (a new snapshot in READ COMMITTED), so it sees every committed claim.
        -- Only the first lock is waited for: a transaction that holds one user's lock never waits
        -- for another's (that could deadlock); a user whose lock is busy is skipped this time.
        IF cardinality(v_skipped_users) = 0 THEN
            PERFORM pg_advisory_xact_lock(hashtext('orchestrator.claim.user'), hashtext(v_task.user_id));
        ELSIF NOT pg_try_advisory_xact_lock(hashtext('orchestrator.claim.user'), hashtext(v_task.user_id)) THEN
            v_skipped_users := v_skipped_users || v_task.user_id;
            CONTINUE;
        END IF;
        SELECT count(*) INTO v_in_progress FROM tasks WHERE user_id = v_task.user_id AND status = 'In Progress';
        IF v_in_progress >= v_limit THEN
            v_skipped_users := v_skipped_users || v_task.user_id;
            CONTINUE;
        END IF;
        UPDATE tasks
        SET status = 'In Progress', worker_id = p_worker_id, claimed_at = now(), attempts = attempts + 1,
            finished_at = NULL, error = NULL
        WHERE id = v_task.id
        RETURNING * INTO v_task;
        RETURN to_jsonb(v_task);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION complete_task(p_task_id text, p_worker_id text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql AS $$
    SELECT assert_acting_worker(p_worker_id);  -- only the worker itself (0005_worker_credentials)
    WITH upd AS (
        UPDATE tasks SET status = 'Complete', finished_at = now(), result = p_result, error = NULL
        WHERE id = p_task_id AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd)
$$;

CREATE OR REPLACE FUNCTION fail_task(p_task_id text, p_worker_id text, p_error text) RETURNS text
LANGUAGE sql AS $$
    SELECT assert_acting_worker(p_worker_id);  -- only the worker itself (0005_worker_credentials)
    WITH lim AS (SELECT queue_setting('max_task_attempts', 3) AS max_attempts),
    upd AS (
        UPDATE tasks t
        SET status = CASE WHEN t.attempts >= lim.max_attempts THEN 'Failed' ELSE 'Queued' END,
            error = p_error,
            finished_at = CASE WHEN t.attempts >= lim.max_attempts THEN now() END,
            worker_id = CASE WHEN t.attempts >= lim.max_attempts THEN t.worker_id END,
            claimed_at = CASE WHEN t.attempts >= lim.max_attempts THEN t.claimed_at END
        FROM lim
        WHERE t.id = p_task_id AND t.worker_id = p_worker_id AND t.status = 'In Progress'
        RETURNING t.status
    )
    SELECT status FROM upd
$$;

-- A lost or terminated worker's In Progress tasks (called once its pod is confirmed gone). The
-- claim counted the attempt (attempts = claims so far), so a task whose attempts reached
-- max_task_attempts is Failed with the reason instead of going back: a task that kills its pod (out
-- of memory, a segfault) would otherwise boot a pod, kill it and come back forever. The same limit
-- as fail_task, and as the reigh profile's requeue (which counts the app's way: attempts there are
-- retries, added here on the way back); the same wording of the reason. The others go back to
-- Queued, the loss noted in `error` until the next claim clears it.
CREATE OR REPLACE FUNCTION requeue_worker_tasks(p_worker_id text) RETURNS integer
LANGUAGE sql AS $$
    WITH lim AS (SELECT queue_setting('max_task_attempts', 3) AS max_attempts),
    upd AS (
        UPDATE tasks t
        SET status = CASE WHEN t.attempts >= lim.max_attempts THEN 'Failed' ELSE 'Queued' END,
            error = CASE WHEN t.attempts >= lim.max_attempts
                THEN format('worker %s was lost while running it; %s attempts reached', p_worker_id, t.attempts)
                ELSE format('worker %s was lost while running it (attempt %s of %s); requeued',
                            p_worker_id, t.attempts, lim.max_attempts)
            END,
            finished_at = CASE WHEN t.attempts >= lim.max_attempts THEN now() END,
            worker_id = CASE WHEN t.attempts >= lim.max_attempts THEN t.worker_id END,
            claimed_at = CASE WHEN t.attempts >= lim.max_attempts THEN t.claimed_at END
        FROM lim
        WHERE t.worker_id = p_worker_id AND t.status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*)::integer FROM upd
$$;

-- queued, claimable and in-progress counts in one statement. claimable sums, per user,
-- min(ready queued tasks, max(0, limit - tasks in progress)).
--
-- Measured with 100,000 Queued tasks from 1,000 users (bench/fleet_scale.py): the first version
-- LEFT JOINed every Queued task to its dependency (a hash join over the whole table) and took
-- ~72 ms freshly inserted, ~40 ms after VACUUM. Only tasks that have a dependency need the join:
-- the others are counted straight from the partial index tasks_queued_user_idx (user_id,
-- depends_on), and the few with a dependency are found through the partial index below. Same
-- answer, ~23 ms fresh and ~10 ms after VACUUM. A per-user LIMIT/skip-scan variant (claimable is
-- capped at the limit per user) measured 23 ms / 18 ms: not better, so not taken; per-user
-- counters kept by triggers would add a write on every claim and were not needed for the target.
-- The claim (claim_next_task) is unchanged, so the per-user limit holds exactly as before; this
-- is an estimate of demand for the policy, read in one statement (one snapshot).

-- Queued tasks that wait for another task: the only ones demand_snapshot joins.
CREATE INDEX IF NOT EXISTS tasks_queued_dep_idx ON tasks (depends_on) INCLUDE (user_id)
    WHERE status = 'Queued' AND depends_on IS NOT NULL;

-- p_task_types: the task types the fleet's workers claim (worker.task_types; NULL or empty: all).
-- Queued and claimable count only those types, and in_progress only those the fleet runs; the
-- per-user limit still counts every In Progress task of the user, as claim_next_task does. Queued
-- tasks of other types are reported apart (`queued_other_types`), so `explain` shows work that no
-- worker of this fleet would ever claim instead of spawning pods for it.
--
-- plpgsql, not sql, for its custom plans: with no types the type test folds away and the plan is
-- the one measured above (bench/demand_types.py, 100,000 tasks after VACUUM: 13-25 ms, the same as
-- before the argument existed, run for run); the same statement as a sql function is planned
-- generically and took twice as long. With types given it reads the heap for task_type (40-110 ms
-- on this busy 2-core machine): an index with task_type would cost every insert and claim a write
-- for a setting most fleets leave empty.
DROP FUNCTION IF EXISTS demand_snapshot(integer);  -- the signature before p_task_types
CREATE OR REPLACE FUNCTION demand_snapshot(p_per_user_limit integer DEFAULT NULL, p_task_types text[] DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    WITH lim AS (
        SELECT coalesce(p_per_user_limit::bigint, queue_setting('per_user_concurrency_limit', 3)) AS l
    ), queued AS (
        -- every Queued task of a served type, and those that wait for nothing: no join
        SELECT user_id, count(*) AS n, count(*) FILTER (WHERE depends_on IS NULL) AS free
        FROM tasks
        WHERE status = 'Queued'
          AND (p_task_types IS NULL OR cardinality(p_task_types) = 0 OR task_type = ANY (p_task_types))
        GROUP BY user_id
    ), dep_ready AS (
        -- Queued tasks of a served type whose dependency is Complete
        SELECT t.user_id, count(*) AS n
        FROM tasks t JOIN tasks d ON d.id = t.depends_on AND d.status = 'Complete'
        WHERE t.status = 'Queued' AND t.depends_on IS NOT NULL
          AND (p_task_types IS NULL OR cardinality(p_task_types) = 0 OR t.task_type = ANY (p_task_types))
        GROUP BY t.user_id
    ), busy AS (
        -- every In Progress task: the per-user limit counts them all, whatever their type
        SELECT user_id, count(*) AS n,
               count(*) FILTER (WHERE p_task_types IS NULL OR cardinality(p_task_types) = 0
                                   OR task_type = ANY (p_task_types)) AS served
        FROM tasks WHERE status = 'In Progress' GROUP BY user_id
    )
    SELECT jsonb_build_object(
        'queued', coalesce((SELECT sum(n) FROM queued), 0),
        'claimable', coalesce((
            SELECT sum(least(q.free + coalesce(r.n, 0), greatest(0, lim.l - coalesce(b.n, 0))))
            FROM queued q LEFT JOIN dep_ready r USING (user_id) LEFT JOIN busy b USING (user_id) CROSS JOIN lim), 0),
        'in_progress', coalesce((SELECT sum(served) FROM busy), 0),
        'taken_at', extract(epoch FROM now()))
    || CASE WHEN p_task_types IS NULL OR cardinality(p_task_types) = 0 THEN '{}'::jsonb
       ELSE jsonb_build_object('queued_other_types', (
           SELECT count(*) FROM tasks WHERE status = 'Queued' AND task_type <> ALL (p_task_types)))
       END);
END
$$;

CREATE OR REPLACE FUNCTION get_task(p_task_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$ SELECT to_jsonb(t) FROM tasks t WHERE t.id = p_task_id $$;

CREATE OR REPLACE FUNCTION list_tasks(p_status text DEFAULT NULL, p_limit integer DEFAULT 10000) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.created_at, s.id), '[]'::jsonb)
    FROM (SELECT * FROM tasks t WHERE p_status IS NULL OR t.status = p_status
          ORDER BY t.created_at, t.id LIMIT p_limit) s
$$;

CREATE OR REPLACE FUNCTION task_counts() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_object_agg(status, n), '{}'::jsonb)
    FROM (SELECT status, count(*) AS n FROM tasks GROUP BY status) s
$$;

-- Wakes the Scaler (LISTEN task_changes) when tasks arrive or change status.
CREATE OR REPLACE FUNCTION notify_task_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Identical payloads are folded into one notification per transaction.
    PERFORM pg_notify('task_changes', lower(TG_OP));
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS tasks_notify_insert ON tasks;
CREATE TRIGGER tasks_notify_insert AFTER INSERT ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION notify_task_change();
DROP TRIGGER IF EXISTS tasks_notify_status ON tasks;
CREATE TRIGGER tasks_notify_status AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION notify_task_change();

-- The tasks a worker holds or last held, through tasks_worker_idx (oldest claim first).
CREATE OR REPLACE FUNCTION explain_worker_tasks(p_worker_id text, p_limit integer DEFAULT 1000) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.claimed_at NULLS LAST, s.id), '[]'::jsonb)
    FROM (SELECT * FROM tasks t WHERE t.worker_id = p_worker_id
          ORDER BY t.claimed_at NULLS LAST, t.id LIMIT p_limit) s
$$;

-- The newest Queued task's creation time: one index lookup ((status, created_at)), polled between
-- cycles by a Scaler that has no NOTIFY to wake it, so a new task is seen within the poll interval.
CREATE OR REPLACE FUNCTION queue_marker() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT max(created_at)::text FROM tasks WHERE status = 'Queued'
$$;
