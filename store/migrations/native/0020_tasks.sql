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

-- The claim reads queue_users (0002_tasks_table.sql), kept exact by the triggers below, instead of
-- walking the tasks: the first row of queue_users_claimable_idx is the user with capacity whose
-- oldest ready task is the oldest of all such tasks, so its cost does not grow with the depth of
-- the queue, with the users at their limit (not in that index) or with the tasks that wait for a
-- dependency (never ready). Measured by bench/queue_scale.py.
--
-- Exactly once and the per-user limit: the user's row is locked (FOR UPDATE SKIP LOCKED) before
-- its head task, and every write that changes a user's counts or head locks that row until it
-- commits (queue_users_adjust), so a claim sees the user's committed state (READ COMMITTED re-reads
-- a row it locks) and no other claim of that user runs until it commits. A claimer that finds the
-- row locked takes the next user instead of waiting.
--
-- With p_task_types, users with capacity are probed in the order of their heads for their oldest
-- ready task of those types (tasks_ready_user_idx), until the next user's head is younger than the
-- best found: the cost grows with the users whose ready tasks are all of other types, never with
-- the depth of the queue.
CREATE OR REPLACE FUNCTION claim_next_task(p_worker_id text, p_task_types text[] DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_worker_status text;
    v_user queue_users;
    v_user_id text;
    v_task tasks;
    v_candidate record;
    v_best_at timestamptz;
    v_best_id text;
    v_skipped_users text[] := '{}';
    v_all_types boolean := p_task_types IS NULL OR cardinality(p_task_types) = 0;
BEGIN
    PERFORM assert_acting_worker(p_worker_id);  -- a worker claims only for itself (0005_worker_credentials)
    -- Only an active worker claims. FOR KEY SHARE, the weakest row lock: a transition
    -- (transition_worker locks the row FOR UPDATE) still waits for this claim to commit, so once
    -- `draining` is committed no new claim can start for this worker; but a heartbeat (an UPDATE
    -- of non-key columns, which takes FOR NO KEY UPDATE) does not conflict with it and never waits
    -- for a claim. FOR SHARE, as before, made every heartbeat wait for a claim in flight.
    SELECT status INTO v_worker_status FROM workers WHERE id = p_worker_id FOR KEY SHARE;
    IF v_worker_status IS DISTINCT FROM 'active' THEN
        RETURN NULL;
    END IF;
    LOOP
        IF v_all_types THEN
            SELECT u.* INTO v_user FROM queue_users u
            WHERE u.head_id IS NOT NULL AND NOT u.at_limit AND u.user_id <> ALL (v_skipped_users)
            ORDER BY u.head_created_at, u.head_id
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                RETURN NULL;
            END IF;
            -- a new statement (READ COMMITTED: a new snapshot) under the user's lock: its head as committed
            SELECT t.* INTO v_task FROM tasks t
            WHERE t.id = v_user.head_id AND t.status = 'Queued' AND NOT t.blocked
            FOR UPDATE SKIP LOCKED;
        ELSE
            -- Users by their head, each probed for its oldest ready task of those types, until
            -- a user's head is younger than the best task found: none of its tasks can be older.
            -- With mostly served types that is one or two users.
            v_user_id := NULL;
            v_best_at := NULL;
            v_best_id := NULL;
            FOR v_candidate IN
                SELECT u.user_id, u.head_created_at, u.head_id FROM queue_users u
                WHERE u.head_id IS NOT NULL AND NOT u.at_limit AND u.user_id <> ALL (v_skipped_users)
                ORDER BY u.head_created_at, u.head_id
            LOOP
                EXIT WHEN v_best_at IS NOT NULL
                    AND (v_candidate.head_created_at, v_candidate.head_id) > (v_best_at, v_best_id);
                SELECT t.created_at, t.id INTO v_task.created_at, v_task.id FROM tasks t
                WHERE t.user_id = v_candidate.user_id AND t.status = 'Queued' AND NOT t.blocked
                  AND t.task_type = ANY (p_task_types)
                ORDER BY t.created_at, t.id LIMIT 1;
                IF FOUND AND (v_best_at IS NULL OR (v_task.created_at, v_task.id) < (v_best_at, v_best_id)) THEN
                    v_best_at := v_task.created_at;
                    v_best_id := v_task.id;
                    v_user_id := v_candidate.user_id;
                END IF;
            END LOOP;
            IF v_user_id IS NULL THEN
                RETURN NULL;
            END IF;
            SELECT u.* INTO v_user FROM queue_users u
            WHERE u.user_id = v_user_id AND NOT u.at_limit
            FOR UPDATE SKIP LOCKED;
            IF NOT FOUND THEN
                v_skipped_users := v_skipped_users || v_user_id;
                CONTINUE;
            END IF;
            SELECT t.* INTO v_task FROM tasks t
            WHERE t.user_id = v_user_id AND t.status = 'Queued' AND NOT t.blocked AND t.task_type = ANY (p_task_types)
            ORDER BY t.created_at, t.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED;
        END IF;
        IF NOT FOUND THEN
            IF v_all_types AND NOT EXISTS (
                SELECT 1 FROM tasks t WHERE t.id = v_user.head_id AND t.status = 'Queued' AND NOT t.blocked
            ) THEN
                -- a head that is not ready as committed (a write that bypassed the triggers, say
                -- with session_replication_role = replica): moved on under this lock, then again
                UPDATE queue_users q
                SET (head_created_at, head_id) = (
                    SELECT t.created_at, t.id FROM tasks t
                    WHERE t.user_id = v_user.user_id AND t.status = 'Queued' AND NOT t.blocked
                    ORDER BY t.created_at, t.id LIMIT 1)
                WHERE q.user_id = v_user.user_id;
                CONTINUE;
            END IF;
            -- the head is being changed by another writer (an app cancelling it): this user next time
            v_skipped_users := v_skipped_users || v_user.user_id;
            CONTINUE;
        END IF;
        -- The claim counts itself and moves the user's head (under the lock it holds) instead of
        -- the UPDATE trigger: it knows the one change (a ready Queued task of this user now In
        -- Progress; nothing finished, nothing to settle, nobody to wake), and the trigger's
        -- generic work was most of a claim's time. The trigger skips the statement that names
        -- this task in orchestrator.claiming (transaction-local).
        PERFORM set_config('orchestrator.claiming', v_task.id, true);
        UPDATE tasks
        SET status = 'In Progress', worker_id = p_worker_id, claimed_at = now(), attempts = attempts + 1,
            finished_at = NULL, error = NULL
        WHERE id = v_task.id
        RETURNING * INTO v_task;
        PERFORM set_config('orchestrator.claiming', '', true);
        UPDATE queue_users q
        SET in_progress = q.in_progress + 1, queued = q.queued - 1, ready = q.ready - 1,
            at_limit = q.in_progress + 1 >= queue_setting('per_user_concurrency_limit', 3),
            (head_created_at, head_id) = (
                SELECT t.created_at, t.id FROM tasks t
                WHERE t.user_id = v_task.user_id AND t.status = 'Queued' AND NOT t.blocked
                ORDER BY t.created_at, t.id LIMIT 1)
        WHERE q.user_id = v_task.user_id;
        RETURN to_jsonb(v_task);
    END LOOP;
END
$$;

-- Locks the queue_users rows of these users (in user order) until the transaction ends. Completion,
-- failure and requeue take them before the task's row, in the order a claim takes them (the user's
-- row, then its task): a writer that locked a task first and then waited for its user (a trigger of
-- the app's on tasks that keeps per-user rows of its own, say) could deadlock with a claim.
CREATE OR REPLACE FUNCTION queue_lock_users(p_users text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM queue_users WHERE user_id = ANY (p_users) ORDER BY user_id FOR UPDATE;
END
$$;

CREATE OR REPLACE FUNCTION complete_task(p_task_id text, p_worker_id text, p_result jsonb DEFAULT NULL)
RETURNS boolean LANGUAGE sql AS $$
    SELECT assert_acting_worker(p_worker_id);  -- only the worker itself (0005_worker_credentials)
    SELECT queue_lock_users(ARRAY(SELECT user_id FROM tasks WHERE id = p_task_id));
    WITH upd AS (
        UPDATE tasks SET status = 'Complete', finished_at = now(), result = p_result, error = NULL
        WHERE id = p_task_id AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd)
$$;

-- What became of a task this worker held: its status, or NULL when the task is not (or no longer)
-- this worker's. The worker asks after a completion whose answer was lost; its own credential may not
-- read tasks (get_task), only this answer about its own.
CREATE OR REPLACE FUNCTION worker_task_status(p_task_id text, p_worker_id text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT assert_acting_worker(p_worker_id);  -- only the worker itself (0005_worker_credentials)
    SELECT status FROM tasks WHERE id = p_task_id AND worker_id = p_worker_id
$$;

-- The tasks this worker holds In Progress, oldest claim first. A worker whose claim call failed
-- without an answer asks this before claiming again: a claim that committed is found and run, never
-- stranded In Progress on a live worker that does not know it holds it.
CREATE OR REPLACE FUNCTION worker_held_tasks(p_worker_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT assert_acting_worker(p_worker_id);  -- only the worker itself (0005_worker_credentials)
    SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.claimed_at, t.id), '[]'::jsonb)
    FROM tasks t WHERE t.worker_id = p_worker_id AND t.status = 'In Progress'
$$;

CREATE OR REPLACE FUNCTION fail_task(p_task_id text, p_worker_id text, p_error text) RETURNS text
LANGUAGE sql AS $$
    SELECT assert_acting_worker(p_worker_id);  -- only the worker itself (0005_worker_credentials)
    SELECT queue_lock_users(ARRAY(SELECT user_id FROM tasks WHERE id = p_task_id));
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
    SELECT queue_lock_users(ARRAY(SELECT user_id FROM tasks WHERE worker_id = p_worker_id AND status = 'In Progress'));
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
-- Since then the claim keeps per-user counters (queue_users), and demand_snapshot without task
-- types reads those instead (one row per user); the statement below is the path with types. A
-- task waiting on a dependency is `blocked` until the dependency completes (no join needed).

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
DECLARE
    v_limit bigint := coalesce(p_per_user_limit::bigint, queue_setting('per_user_concurrency_limit', 3));
BEGIN
    -- All types: the per-user counters (queue_users), one row per user, whatever the depth of the
    -- queue (bench/queue_scale.py: 100,000 Queued tasks of 1,000 users in well under a millisecond).
    -- Blocked tasks are queued but never claimable; cascade-failed ones are not Queued at all.
    IF p_task_types IS NULL OR cardinality(p_task_types) = 0 THEN
        RETURN (
            SELECT jsonb_build_object(
                'queued', coalesce(sum(u.queued), 0),
                'claimable', coalesce(sum(least(u.ready, greatest(0, v_limit - u.in_progress))), 0),
                'in_progress', coalesce(sum(u.in_progress), 0),
                'taken_at', extract(epoch FROM now()))
            FROM queue_users u WHERE u.queued > 0 OR u.in_progress > 0);
    END IF;
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
        FROM tasks t
        WHERE t.status = 'Queued' AND t.depends_on IS NOT NULL AND NOT t.blocked
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

-- The queue's bookkeeping, kept by triggers on `tasks` so that every writer (these functions, the
-- app's own UPDATEs, a cancel, a DELETE) keeps it exact: the per-user counters and heads of
-- queue_users, the dependency state of waiting tasks, a worker's last finished task, and the
-- notifications that wake the Scaler. Statement triggers with transition tables: one pass per
-- statement however many rows it wrote (a bulk insert of 1,000,000 tasks takes a few seconds).

-- Applies per-user changes of counts (deltas) and recomputes the head of the users in p_head.
-- Locks the users' rows in user order first (two statements touching several users never
-- deadlock on them), then reads the tasks in a new statement: its snapshot sees every write of a
-- transaction that held one of these locks before, so the counts and heads are those committed.
CREATE OR REPLACE FUNCTION queue_users_adjust(
    p_users text[], p_in_progress integer[], p_queued integer[], p_ready integer[], p_head boolean[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_limit bigint;
    v_locked integer;
BEGIN
    IF p_users IS NULL OR cardinality(p_users) = 0 THEN
        RETURN;
    END IF;
    IF cardinality(p_users) = 1 THEN
        -- one user (a claim, a completion): plain index lookups, the common case
        PERFORM 1 FROM queue_users WHERE user_id = p_users[1] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO queue_users (user_id) VALUES (p_users[1]) ON CONFLICT (user_id) DO NOTHING;
            PERFORM 1 FROM queue_users WHERE user_id = p_users[1] FOR UPDATE;
        END IF;
        v_limit := queue_setting('per_user_concurrency_limit', 3);
        IF p_head[1] THEN
            UPDATE queue_users q
            SET in_progress = q.in_progress + p_in_progress[1], queued = q.queued + p_queued[1],
                ready = q.ready + p_ready[1], at_limit = q.in_progress + p_in_progress[1] >= v_limit,
                (head_created_at, head_id) = (
                    SELECT t.created_at, t.id FROM tasks t
                    WHERE t.user_id = p_users[1] AND t.status = 'Queued' AND NOT t.blocked
                    ORDER BY t.created_at, t.id LIMIT 1)
            WHERE q.user_id = p_users[1];
        ELSE
            UPDATE queue_users q
            SET in_progress = q.in_progress + p_in_progress[1], queued = q.queued + p_queued[1],
                ready = q.ready + p_ready[1], at_limit = q.in_progress + p_in_progress[1] >= v_limit
            WHERE q.user_id = p_users[1];
        END IF;
        RETURN;
    END IF;
    LOOP
        SELECT count(*) INTO v_locked
        FROM (SELECT 1 FROM queue_users WHERE user_id = ANY (p_users) ORDER BY user_id FOR UPDATE) s;
        EXIT WHEN v_locked = cardinality(p_users);
        -- a user seen for the first time (or whose empty row retention just removed)
        INSERT INTO queue_users (user_id)
        SELECT u FROM unnest(p_users) u ORDER BY u
        ON CONFLICT (user_id) DO NOTHING;
    END LOOP;
    v_limit := queue_setting('per_user_concurrency_limit', 3);
    UPDATE queue_users q
    SET in_progress = q.in_progress + d.ip,
        queued = q.queued + d.qd,
        ready = q.ready + d.rd,
        at_limit = q.in_progress + d.ip >= v_limit,
        head_created_at = CASE WHEN d.head THEN h.created_at ELSE q.head_created_at END,
        head_id = CASE WHEN d.head THEN h.id ELSE q.head_id END
    FROM unnest(p_users, p_in_progress, p_queued, p_ready, p_head) AS d (user_id, ip, qd, rd, head)
    LEFT JOIN LATERAL (
        SELECT t.created_at, t.id FROM tasks t
        WHERE d.head AND t.user_id = d.user_id AND t.status = 'Queued' AND NOT t.blocked
        ORDER BY t.created_at, t.id
        LIMIT 1) h ON true
    WHERE q.user_id = d.user_id;
END
$$;

-- A task put in with a dependency waits until the statement trigger below has looked at it.
CREATE OR REPLACE FUNCTION tasks_before_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.blocked := NEW.status = 'Queued';
    RETURN NEW;
END
$$;

-- Waiting tasks whose dependency is settled: ready when it is Complete, Failed with the reason
-- when it Failed, was Cancelled or does not exist (it could never run, and must not keep the fleet
-- up). The dependencies are locked FOR SHARE first: a completion in flight commits before they are
-- read, and one that comes later finds these tasks (its trigger reads them in a new snapshot).
CREATE OR REPLACE FUNCTION tasks_settle_dependents(p_task_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_task_ids IS NULL OR cardinality(p_task_ids) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM tasks d
    WHERE d.id IN (SELECT t.depends_on FROM tasks t WHERE t.id = ANY (p_task_ids))
    ORDER BY d.id
    FOR SHARE OF d;
    UPDATE tasks t SET blocked = false
    FROM tasks d
    WHERE t.id = ANY (p_task_ids) AND t.status = 'Queued' AND t.blocked
      AND d.id = t.depends_on AND d.status = 'Complete';
    UPDATE tasks t
    SET status = 'Failed', blocked = false, finished_at = now(),
        error = CASE WHEN s.dep_status IS NULL
                     THEN format('depends on task %s, which does not exist: it can never run', t.depends_on)
                     ELSE format('depends on task %s, which is %s: it can never run', t.depends_on, s.dep_status)
                END
    FROM (SELECT w.id, d.status AS dep_status
          FROM tasks w LEFT JOIN tasks d ON d.id = w.depends_on
          WHERE w.id = ANY (p_task_ids)) s
    WHERE t.id = s.id AND t.status = 'Queued' AND t.blocked
      AND (s.dep_status IS NULL OR s.dep_status IN ('Failed', 'Cancelled'));
END
$$;

CREATE OR REPLACE FUNCTION tasks_after_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_waiting text[];
BEGIN
    PERFORM queue_users_adjust(array_agg(d.user_id), array_agg(d.ip), array_agg(d.qd), array_agg(d.rd),
                               array_agg(d.head))
    FROM (SELECT n.user_id,
                 count(*) FILTER (WHERE n.status = 'In Progress')::integer AS ip,
                 count(*) FILTER (WHERE n.status = 'Queued')::integer AS qd,
                 count(*) FILTER (WHERE n.status = 'Queued' AND NOT n.blocked)::integer AS rd,
                 bool_or(n.status = 'Queued' AND NOT n.blocked) AS head
          FROM new_tasks n
          GROUP BY n.user_id
          HAVING bool_or(n.status IN ('Queued', 'In Progress'))) d;
    SELECT array_agg(n.id) INTO v_waiting FROM new_tasks n WHERE n.blocked;
    PERFORM tasks_settle_dependents(v_waiting);
    -- wakes the Scaler (LISTEN task_changes) only for a task it could start a worker for; a
    -- dependency that completes wakes it through the UPDATE trigger
    IF EXISTS (SELECT 1 FROM new_tasks n WHERE n.status = 'Queued' AND NOT n.blocked) THEN
        PERFORM pg_notify('task_changes', 'ready');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tasks_after_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_workers text[];
    v_settled text[];
    v_wake boolean;
BEGIN
    -- claim_next_task counts its own claim (see there)
    IF current_setting('orchestrator.claiming', true) <> '' THEN
        RETURN NULL;
    END IF;
    -- only the rows whose status, readiness, owner or age changed count (a result or params
    -- update is none of these)
    PERFORM queue_users_adjust(array_agg(d.user_id), array_agg(d.ip), array_agg(d.qd), array_agg(d.rd),
                               array_agg(d.head))
    FROM (SELECT x.user_id, sum(x.ip)::integer AS ip, sum(x.qd)::integer AS qd, sum(x.rd)::integer AS rd,
                 bool_or(x.head) AS head
          FROM old_tasks o JOIN new_tasks n USING (id)
          CROSS JOIN LATERAL (VALUES
              (o.user_id, -(o.status = 'In Progress')::integer, -(o.status = 'Queued')::integer,
               -(o.status = 'Queued' AND NOT o.blocked)::integer, o.status = 'Queued' AND NOT o.blocked),
              (n.user_id, (n.status = 'In Progress')::integer, (n.status = 'Queued')::integer,
               (n.status = 'Queued' AND NOT n.blocked)::integer, n.status = 'Queued' AND NOT n.blocked)
          ) AS x (user_id, ip, qd, rd, head)
          WHERE (o.status, o.blocked, o.user_id, o.created_at) IS DISTINCT FROM (n.status, n.blocked, n.user_id, n.created_at)
          GROUP BY x.user_id
          HAVING sum(x.ip) <> 0 OR sum(x.qd) <> 0 OR sum(x.rd) <> 0 OR bool_or(x.head)) d;
    SELECT array_agg(DISTINCT o.worker_id) FILTER (
               WHERE o.status = 'In Progress' AND n.status <> 'In Progress' AND o.worker_id IS NOT NULL),
           array_agg(n.id) FILTER (
               WHERE n.status IN ('Complete', 'Failed', 'Cancelled') AND n.status <> o.status),
           bool_or((n.status = 'Queued' AND NOT n.blocked AND NOT (o.status = 'Queued' AND NOT o.blocked))
                   OR (o.status = 'In Progress' AND n.status <> 'In Progress'))
    INTO v_workers, v_settled, v_wake
    FROM old_tasks o JOIN new_tasks n USING (id)
    WHERE o.status <> n.status OR o.blocked <> n.blocked;
    -- a worker's last finished task, kept on its row (workers_json's idle_since reads it)
    IF v_workers IS NOT NULL THEN
        UPDATE workers SET last_task_finished_at = now() WHERE id = ANY (v_workers);
    END IF;
    -- the tasks waiting for those that ended: ready, or failed with the reason (which cascades
    -- through this trigger)
    IF v_settled IS NOT NULL THEN
        PERFORM tasks_settle_dependents(array_agg(t.id))
        FROM tasks t
        WHERE t.depends_on = ANY (v_settled) AND t.status = 'Queued' AND t.depends_on IS NOT NULL AND t.blocked;
    END IF;
    -- a decision could change only when a task becomes claimable or one ends: a claim, the cascade
    -- of waiting tasks or a cancel of a queued one wake nobody. Identical payloads are folded into
    -- one notification per transaction.
    IF v_wake THEN
        PERFORM pg_notify('task_changes', 'changed');
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION tasks_after_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM queue_users_adjust(array_agg(d.user_id), array_agg(d.ip), array_agg(d.qd), array_agg(d.rd),
                               array_agg(d.head))
    FROM (SELECT o.user_id,
                 -count(*) FILTER (WHERE o.status = 'In Progress')::integer AS ip,
                 -count(*) FILTER (WHERE o.status = 'Queued')::integer AS qd,
                 -count(*) FILTER (WHERE o.status = 'Queued' AND NOT o.blocked)::integer AS rd,
                 bool_or(o.status = 'Queued' AND NOT o.blocked) AS head
          FROM old_tasks o
          WHERE o.status IN ('Queued', 'In Progress')
          GROUP BY o.user_id) d;
    -- tasks waiting for a deleted one can never run: failed with the reason
    PERFORM tasks_settle_dependents(array_agg(t.id))
    FROM tasks t
    WHERE t.depends_on IN (SELECT o.id FROM old_tasks o WHERE o.status IN ('Queued', 'In Progress'))
      AND t.status = 'Queued' AND t.depends_on IS NOT NULL AND t.blocked;
    RETURN NULL;
END
$$;

-- The per-user limit changed: every user's at_limit with it.
CREATE OR REPLACE FUNCTION queue_limit_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE queue_users SET at_limit = in_progress >= NEW.value WHERE at_limit <> (in_progress >= NEW.value);
    RETURN NULL;
END
$$;

-- Recomputes the queue's bookkeeping from the tasks: the `blocked` flags (settling waiting tasks
-- whose dependency ended or is missing) and every queue_users row. Run by this migration (a
-- database whose tasks predate it) and usable by hand after writes that bypassed the triggers
-- (session_replication_role = replica). Takes the rows' locks as any writer does.
CREATE OR REPLACE FUNCTION rebuild_queue_users() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_limit bigint := queue_setting('per_user_concurrency_limit', 3);
    v_waiting text[];
    v_users integer;
BEGIN
    UPDATE tasks t SET blocked = true
    WHERE t.status = 'Queued' AND t.depends_on IS NOT NULL AND NOT t.blocked
      AND NOT EXISTS (SELECT 1 FROM tasks d WHERE d.id = t.depends_on AND d.status = 'Complete');
    SELECT array_agg(t.id) INTO v_waiting FROM tasks t WHERE t.status = 'Queued' AND t.blocked;
    PERFORM tasks_settle_dependents(v_waiting);
    PERFORM 1 FROM queue_users ORDER BY user_id FOR UPDATE;
    DELETE FROM queue_users;
    INSERT INTO queue_users (user_id, in_progress, queued, ready, at_limit, head_created_at, head_id)
    SELECT c.user_id, c.ip, c.qd, c.rd, c.ip >= v_limit, h.created_at, h.id
    FROM (SELECT t.user_id,
                 count(*) FILTER (WHERE t.status = 'In Progress')::integer AS ip,
                 count(*) FILTER (WHERE t.status = 'Queued')::integer AS qd,
                 count(*) FILTER (WHERE t.status = 'Queued' AND NOT t.blocked)::integer AS rd
          FROM tasks t WHERE t.status IN ('Queued', 'In Progress') GROUP BY t.user_id) c
    LEFT JOIN LATERAL (
        SELECT t.created_at, t.id FROM tasks t
        WHERE t.user_id = c.user_id AND t.status = 'Queued' AND NOT t.blocked
        ORDER BY t.created_at, t.id LIMIT 1) h ON true;
    GET DIAGNOSTICS v_users = ROW_COUNT;
    RETURN v_users;
END
$$;

DROP TRIGGER IF EXISTS tasks_notify_insert ON tasks;
DROP TRIGGER IF EXISTS tasks_notify_status ON tasks;
DROP FUNCTION IF EXISTS notify_task_change();
DROP TRIGGER IF EXISTS tasks_before_insert ON tasks;
CREATE TRIGGER tasks_before_insert BEFORE INSERT ON tasks
    FOR EACH ROW WHEN (NEW.depends_on IS NOT NULL) EXECUTE FUNCTION tasks_before_insert();
DROP TRIGGER IF EXISTS tasks_after_insert ON tasks;
CREATE TRIGGER tasks_after_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS new_tasks FOR EACH STATEMENT EXECUTE FUNCTION tasks_after_insert();
DROP TRIGGER IF EXISTS tasks_after_update ON tasks;
CREATE TRIGGER tasks_after_update AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_tasks NEW TABLE AS new_tasks FOR EACH STATEMENT EXECUTE FUNCTION tasks_after_update();
DROP TRIGGER IF EXISTS tasks_after_delete ON tasks;
CREATE TRIGGER tasks_after_delete AFTER DELETE ON tasks
    REFERENCING OLD TABLE AS old_tasks FOR EACH STATEMENT EXECUTE FUNCTION tasks_after_delete();
DROP TRIGGER IF EXISTS queue_settings_limit ON queue_settings;
CREATE TRIGGER queue_settings_limit AFTER INSERT OR UPDATE ON queue_settings
    FOR EACH ROW WHEN (NEW.key = 'per_user_concurrency_limit') EXECUTE FUNCTION queue_limit_changed();

SELECT rebuild_queue_users();

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

-- Retention of finished tasks (apply_retention, 0070_retention.sql, calls it for 'tasks'): at most
-- p_batch Complete, Failed or Cancelled tasks finished before p_cutoff, oldest first. No task
-- waits for one of them (a completion made its waiting tasks ready, a failure failed them), and
-- the claim never locks a finished task. A task put in later that depends on a deleted one is
-- failed as depending on a missing task.
CREATE OR REPLACE FUNCTION retain_finished_tasks(p_cutoff timestamptz, p_batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_deleted integer;
BEGIN
    -- MATERIALIZED: the batch is chosen (and locked) once, never re-run per row
    WITH batch AS MATERIALIZED (
        SELECT t.id FROM tasks t
        WHERE t.status IN ('Complete', 'Failed', 'Cancelled') AND t.finished_at < p_cutoff
        ORDER BY t.finished_at LIMIT p_batch
        FOR UPDATE SKIP LOCKED)
    DELETE FROM tasks t USING batch b WHERE t.id = b.id AND t.status IN ('Complete', 'Failed', 'Cancelled');
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    -- users left with nothing queued or in progress (retention keeps queue_users to the live ones)
    WITH idle AS MATERIALIZED (
        SELECT u.user_id FROM queue_users u WHERE u.queued = 0 AND u.in_progress = 0 LIMIT p_batch
        FOR UPDATE SKIP LOCKED)
    DELETE FROM queue_users u USING idle i WHERE u.user_id = i.user_id AND u.queued = 0 AND u.in_progress = 0;
    RETURN v_deleted;
END
$$;
