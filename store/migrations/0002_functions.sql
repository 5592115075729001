-- 0002_functions: every store operation as a SQL function.
--
-- PostgresStore calls them with `SELECT fn(p_arg => ...)`, SupabaseStore through PostgREST
-- `rpc/fn` with the same named arguments, so both behave the same by construction. Results are
-- jsonb (or scalars), parsed by one Python implementation (store/rpc.py).
--
-- Fenced writes raise SQLSTATE 'ORF01' ("stale epoch ..."), mapped to store.base.StaleEpoch.

-- ---------------------------------------------------------------------------------------------
-- helpers

CREATE OR REPLACE FUNCTION db_now() RETURNS timestamptz
LANGUAGE sql STABLE AS $$ SELECT now() $$;

CREATE OR REPLACE FUNCTION queue_setting(p_key text, p_default bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value FROM queue_settings WHERE key = p_key), p_default)
$$;

CREATE OR REPLACE FUNCTION configure_queue(p_per_user_limit integer, p_max_task_attempts integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p_per_user_limit IS NULL OR p_per_user_limit < 1 THEN
        RAISE EXCEPTION 'per_user_limit must be at least 1, got %', p_per_user_limit USING ERRCODE = '22023';
    END IF;
    IF p_max_task_attempts IS NULL OR p_max_task_attempts < 1 THEN
        RAISE EXCEPTION 'max_task_attempts must be at least 1, got %', p_max_task_attempts USING ERRCODE = '22023';
    END IF;
    INSERT INTO queue_settings (key, value)
    VALUES ('per_user_concurrency_limit', p_per_user_limit), ('max_task_attempts', p_max_task_attempts)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
    WHERE queue_settings.value IS DISTINCT FROM EXCLUDED.value;
    RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION queue_settings_json() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'per_user_concurrency_limit', queue_setting('per_user_concurrency_limit', 3),
        'max_task_attempts', queue_setting('max_task_attempts', 3))
$$;

-- Raises 'stale epoch' unless p_epoch is the epoch of a lease's current tenure (NULL: unfenced).
CREATE OR REPLACE FUNCTION check_epoch(p_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_epoch IS NOT NULL AND NOT EXISTS (SELECT 1 FROM orchestrator_leases WHERE epoch = p_epoch) THEN
        RAISE EXCEPTION 'stale epoch %: another holder has taken the lease', p_epoch
            USING ERRCODE = 'ORF01', HINT = 'this process is no longer the leader';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- tasks

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
    WITH upd AS (
        UPDATE tasks SET status = 'Complete', finished_at = now(), result = p_result, error = NULL
        WHERE id = p_task_id AND worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd)
$$;

CREATE OR REPLACE FUNCTION fail_task(p_task_id text, p_worker_id text, p_error text) RETURNS text
LANGUAGE sql AS $$
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

CREATE OR REPLACE FUNCTION requeue_worker_tasks(p_worker_id text) RETURNS integer
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE tasks SET status = 'Queued', worker_id = NULL, claimed_at = NULL
        WHERE worker_id = p_worker_id AND status = 'In Progress'
        RETURNING 1
    )
    SELECT count(*)::integer FROM upd
$$;

-- queued, claimable and in-progress counts in one statement. claimable sums, per user,
-- min(ready queued tasks, max(0, limit - tasks in progress)).
CREATE OR REPLACE FUNCTION demand_snapshot(p_per_user_limit integer DEFAULT NULL) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH lim AS (
        SELECT coalesce(p_per_user_limit::bigint, queue_setting('per_user_concurrency_limit', 3)) AS l
    ), queued AS (
        SELECT t.user_id, count(*) AS n,
               count(*) FILTER (WHERE t.depends_on IS NULL OR d.status = 'Complete') AS ready
        FROM tasks t LEFT JOIN tasks d ON d.id = t.depends_on
        WHERE t.status = 'Queued'
        GROUP BY t.user_id
    ), busy AS (
        SELECT user_id, count(*) AS n FROM tasks WHERE status = 'In Progress' GROUP BY user_id
    )
    SELECT jsonb_build_object(
        'queued', coalesce((SELECT sum(n) FROM queued), 0),
        'claimable', coalesce((
            SELECT sum(least(q.ready, greatest(0, lim.l - coalesce(b.n, 0))))
            FROM queued q LEFT JOIN busy b USING (user_id) CROSS JOIN lim), 0),
        'in_progress', coalesce((SELECT sum(n) FROM busy), 0),
        'taken_at', extract(epoch FROM now()))
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

-- ---------------------------------------------------------------------------------------------
-- workers

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

CREATE OR REPLACE FUNCTION get_worker(p_worker_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$ SELECT workers_json(p_worker_id, true) -> 0 $$;

CREATE OR REPLACE FUNCTION list_workers(p_include_terminated boolean DEFAULT false) RETURNS jsonb
LANGUAGE sql STABLE AS $$ SELECT workers_json(NULL, p_include_terminated) $$;

CREATE OR REPLACE FUNCTION create_worker(
    p_worker_id text,
    p_reason text,
    p_epoch bigint DEFAULT NULL,
    p_gpu_type text DEFAULT NULL,
    p_trace_context text DEFAULT NULL,
    p_metadata jsonb DEFAULT NULL,
    p_created_at timestamptz DEFAULT NULL
) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_at timestamptz := coalesce(p_created_at, now());
BEGIN
    PERFORM check_epoch(p_epoch);
    INSERT INTO workers (id, status, gpu_type, created_at, trace_context, metadata)
    VALUES (p_worker_id, 'spawning', p_gpu_type, v_at, p_trace_context, coalesce(p_metadata, '{}'::jsonb))
    ON CONFLICT (id) DO NOTHING;
    IF FOUND THEN
        INSERT INTO worker_events (worker_id, at, from_status, to_status, reason, epoch)
        VALUES (p_worker_id, v_at, NULL, 'spawning', coalesce(p_reason, ''), p_epoch);
    END IF;
    RETURN get_worker(p_worker_id);
END
$$;

CREATE OR REPLACE FUNCTION set_worker_pod(
    p_worker_id text, p_pod_id text, p_gpu_type text DEFAULT NULL, p_metadata jsonb DEFAULT NULL
) RETURNS boolean LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE workers
        SET pod_id = p_pod_id, gpu_type = coalesce(p_gpu_type, gpu_type),
            metadata = metadata || coalesce(p_metadata, '{}'::jsonb)
        WHERE id = p_worker_id
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd)
$$;

-- Compare-and-set of a worker's status plus its worker_events row, in one transaction.
-- p_expected NULL means "whatever it is". `terminated` is never left.
CREATE OR REPLACE FUNCTION transition_worker(
    p_worker_id text,
    p_expected text,
    p_new text,
    p_reason text,
    p_epoch bigint DEFAULT NULL,
    p_at timestamptz DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_at timestamptz := coalesce(p_at, now());
    v_old text;
BEGIN
    PERFORM check_epoch(p_epoch);
    SELECT status INTO v_old FROM workers WHERE id = p_worker_id FOR UPDATE;
    IF NOT FOUND OR (p_expected IS NOT NULL AND v_old <> p_expected) THEN
        RETURN false;
    END IF;
    IF v_old = 'terminated' AND p_new <> 'terminated' THEN
        RETURN false;
    END IF;
    UPDATE workers
    SET status = p_new,
        promoted_at = CASE WHEN p_new = 'active' AND v_old <> 'active' THEN v_at ELSE promoted_at END,
        terminated_at = CASE WHEN p_new = 'terminated' THEN coalesce(terminated_at, v_at) ELSE terminated_at END,
        termination_reason = CASE WHEN p_new = 'terminated' THEN coalesce(termination_reason, p_reason)
                                  ELSE termination_reason END
    WHERE id = p_worker_id;
    INSERT INTO worker_events (worker_id, at, from_status, to_status, reason, epoch)
    VALUES (p_worker_id, v_at, v_old, p_new, coalesce(p_reason, ''), p_epoch);
    RETURN true;
END
$$;

-- One UPDATE: last_heartbeat_at and a metadata merge, never the status. Returns the status.
CREATE OR REPLACE FUNCTION worker_heartbeat(p_worker_id text, p_metadata jsonb DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$
    UPDATE workers
    SET last_heartbeat_at = now(), metadata = metadata || coalesce(p_metadata, '{}'::jsonb)
    WHERE id = p_worker_id
    RETURNING status
$$;

-- Newest `p_limit` events of the window, oldest first.
CREATE OR REPLACE FUNCTION list_worker_events(
    p_worker_id text DEFAULT NULL,
    p_since timestamptz DEFAULT NULL,
    p_until timestamptz DEFAULT NULL,
    p_limit integer DEFAULT 10000
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.at, s.id), '[]'::jsonb)
    FROM (SELECT * FROM worker_events e
          WHERE (p_worker_id IS NULL OR e.worker_id = p_worker_id)
            AND (p_since IS NULL OR e.at >= p_since)
            AND (p_until IS NULL OR e.at < p_until)
          ORDER BY e.at DESC, e.id DESC LIMIT p_limit) s
$$;

-- ---------------------------------------------------------------------------------------------
-- decisions

CREATE OR REPLACE FUNCTION record_decision(p_decision jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM check_epoch((p_decision ->> 'leader_epoch')::bigint);
    INSERT INTO scaling_decisions (
        at, cycle_number, leader_epoch, holder, inputs, spawn_count, drain_worker_ids,
        spawned_worker_ids, reasons, breaker, trace_id)
    SELECT coalesce(r.at, now()), r.cycle_number, r.leader_epoch, r.holder, coalesce(r.inputs, '{}'::jsonb),
           coalesce(r.spawn_count, 0), coalesce(r.drain_worker_ids, '{}'), coalesce(r.spawned_worker_ids, '{}'),
           coalesce(r.reasons, '{}'), coalesce(r.breaker, '{}'::jsonb), r.trace_id
    FROM jsonb_to_record(p_decision) AS r (
        at timestamptz, cycle_number bigint, leader_epoch bigint, holder text, inputs jsonb, spawn_count integer,
        drain_worker_ids text[], spawned_worker_ids text[], reasons text[], breaker jsonb, trace_id text)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION set_decision_spawned(p_decision_id bigint, p_worker_ids text[]) RETURNS boolean
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE scaling_decisions SET spawned_worker_ids = coalesce(p_worker_ids, '{}')
        WHERE id = p_decision_id RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd)
$$;

-- Newest `p_limit` decisions of the window, oldest first.
CREATE OR REPLACE FUNCTION list_decisions(
    p_since timestamptz DEFAULT NULL, p_until timestamptz DEFAULT NULL, p_limit integer DEFAULT 1000
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.at, s.id), '[]'::jsonb)
    FROM (SELECT * FROM scaling_decisions d
          WHERE (p_since IS NULL OR d.at >= p_since) AND (p_until IS NULL OR d.at < p_until)
          ORDER BY d.at DESC, d.id DESC LIMIT p_limit) s
$$;

-- ---------------------------------------------------------------------------------------------
-- system logs

-- True when the text is a valid timestamptz. pg_input_is_valid (Postgres 16+) needs no
-- subtransaction; older servers fall back to a cast in an exception block.
DO $$
BEGIN
    IF current_setting('server_version_num')::integer >= 160000 THEN
        CREATE OR REPLACE FUNCTION is_timestamptz(p_text text) RETURNS boolean
        LANGUAGE sql STABLE AS $f$ SELECT p_text IS NOT NULL AND pg_input_is_valid(p_text, 'timestamptz') $f$;
    ELSE
        CREATE OR REPLACE FUNCTION is_timestamptz(p_text text) RETURNS boolean
        LANGUAGE plpgsql STABLE AS $f$
        BEGIN
            IF p_text IS NULL THEN
                RETURN false;
            END IF;
            PERFORM p_text::timestamptz;
            RETURN true;
        EXCEPTION WHEN others THEN
            RETURN false;
        END
        $f$;
    END IF;
END
$$;

-- Inserts a batch set-based. Rows that fail validation are returned as {index, id, reason} and
-- never inserted; ids already present are counted as duplicates (a replay), not as inserted.
CREATE OR REPLACE FUNCTION insert_system_logs(p_records jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    WITH src AS MATERIALIZED (
        SELECT (e.ord - 1)::integer AS idx, e.rec
        FROM jsonb_array_elements(coalesce(p_records, '[]'::jsonb)) WITH ORDINALITY AS e (rec, ord)
    ), checked AS MATERIALIZED (
        SELECT idx, rec,
               CASE WHEN jsonb_typeof(rec) = 'object' THEN rec ->> 'id' END AS id,
               CASE
                   WHEN jsonb_typeof(rec) <> 'object' THEN 'not a JSON object'
                   WHEN coalesce(rec ->> 'id', '') = '' THEN 'id is missing'
                   WHEN rec ->> 'level' IS NULL THEN 'level is missing'
                   WHEN rec ->> 'level' NOT IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL') THEN
                       format('level %s is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL', rec ->> 'level')
                   WHEN rec ->> 'source_type' IS NULL THEN 'source_type is missing'
                   WHEN rec ->> 'source_type' NOT IN ('orchestrator', 'worker') THEN
                       format('source_type %s is not one of orchestrator, worker', rec ->> 'source_type')
                   WHEN rec ->> 'source_id' IS NULL THEN 'source_id is missing'
                   WHEN rec ->> 'message' IS NULL THEN 'message is missing'
                   WHEN rec ->> 'at' IS NULL THEN 'at is missing'
                   WHEN NOT is_timestamptz(rec ->> 'at') THEN format('at %s is not a timestamp', rec ->> 'at')
                   WHEN rec ? 'cycle_number' AND jsonb_typeof(rec -> 'cycle_number') NOT IN ('number', 'null') THEN
                       'cycle_number is not a number'
                   WHEN jsonb_typeof(rec -> 'cycle_number') = 'number'
                        AND (rec ->> 'cycle_number')::numeric <> trunc((rec ->> 'cycle_number')::numeric) THEN
                       'cycle_number is not an integer'
                   WHEN rec ? 'attributes' AND jsonb_typeof(rec -> 'attributes') NOT IN ('object', 'null') THEN
                       'attributes is not a JSON object'
               END AS reason
        FROM src
    ), ins AS (
        INSERT INTO system_logs (
            id, at, level, source_type, source_id, message, logger, cycle_number, worker_id, task_id,
            trace_id, attributes)
        SELECT c.id, (c.rec ->> 'at')::timestamptz, c.rec ->> 'level', c.rec ->> 'source_type',
               c.rec ->> 'source_id', c.rec ->> 'message', c.rec ->> 'logger',
               (c.rec ->> 'cycle_number')::numeric::bigint, c.rec ->> 'worker_id', c.rec ->> 'task_id',
               c.rec ->> 'trace_id', coalesce(nullif(c.rec -> 'attributes', 'null'::jsonb), '{}'::jsonb)
        FROM checked c
        WHERE c.reason IS NULL
        ON CONFLICT (id) DO NOTHING
        RETURNING 1
    )
    SELECT jsonb_build_object(
        'inserted', (SELECT count(*) FROM ins),
        'duplicates', (SELECT count(*) FROM checked WHERE reason IS NULL) - (SELECT count(*) FROM ins),
        'rejected', coalesce(
            (SELECT jsonb_agg(jsonb_build_object('index', idx, 'id', id, 'reason', reason) ORDER BY idx)
             FROM checked WHERE reason IS NOT NULL),
            '[]'::jsonb))
$$;

-- Newest `p_limit` records of the window, oldest first.
CREATE OR REPLACE FUNCTION list_system_logs(
    p_since timestamptz DEFAULT NULL,
    p_until timestamptz DEFAULT NULL,
    p_source_id text DEFAULT NULL,
    p_limit integer DEFAULT 10000
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.at, s.id), '[]'::jsonb)
    FROM (SELECT * FROM system_logs l
          WHERE (p_since IS NULL OR l.at >= p_since)
            AND (p_until IS NULL OR l.at < p_until)
            AND (p_source_id IS NULL OR l.source_id = p_source_id)
          ORDER BY l.at DESC, l.id DESC LIMIT p_limit) s
$$;

CREATE OR REPLACE FUNCTION count_system_logs() RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT count(*) FROM system_logs $$;

-- ---------------------------------------------------------------------------------------------
-- leader lease (by the database clock)

CREATE OR REPLACE FUNCTION lease_json(p_name text, p_acquired boolean) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('name', l.name, 'holder', l.holder, 'epoch', l.epoch,
                              'expires_at', l.expires_at, 'acquired', p_acquired)
    FROM orchestrator_leases l WHERE l.name = p_name
$$;

-- Takes the lease when free or expired (a new epoch), renews it when already ours (same epoch).
CREATE OR REPLACE FUNCTION acquire_leader_lease(p_name text, p_holder text, p_ttl_s double precision)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_ttl interval := make_interval(secs => p_ttl_s);
BEGIN
    INSERT INTO orchestrator_leases AS l (name, holder, epoch, acquired_at, renewed_at, expires_at)
    VALUES (p_name, p_holder, nextval('orchestrator_lease_epoch_seq'), now(), now(), now() + v_ttl)
    ON CONFLICT (name) DO UPDATE
    SET epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch ELSE EXCLUDED.epoch END,
        acquired_at = CASE WHEN l.holder = EXCLUDED.holder THEN l.acquired_at ELSE now() END,
        holder = EXCLUDED.holder,
        renewed_at = now(),
        expires_at = now() + v_ttl
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now();
    RETURN lease_json(p_name, FOUND);
END
$$;

CREATE OR REPLACE FUNCTION renew_leader_lease(p_name text, p_holder text, p_epoch bigint, p_ttl_s double precision)
RETURNS boolean LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE orchestrator_leases
        SET renewed_at = now(), expires_at = now() + make_interval(secs => p_ttl_s)
        WHERE name = p_name AND holder = p_holder AND epoch = p_epoch
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd)
$$;

-- Lets the lease expire now; the next holder takes it at once with a new epoch.
CREATE OR REPLACE FUNCTION release_leader_lease(p_name text, p_holder text, p_epoch bigint) RETURNS boolean
LANGUAGE sql AS $$
    WITH upd AS (
        UPDATE orchestrator_leases SET expires_at = now()
        WHERE name = p_name AND holder = p_holder AND epoch = p_epoch
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM upd)
$$;

-- `acquired` here means someone holds it unexpired.
CREATE OR REPLACE FUNCTION get_leader_lease(p_name text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT lease_json(p_name, l.expires_at > now()) FROM orchestrator_leases l WHERE l.name = p_name
$$;

-- ---------------------------------------------------------------------------------------------
-- privileges: Supabase's API roles may call none of these (only service_role and direct
-- connections). Functions run as the caller, so RLS still applies to anyone else.

DO $$
DECLARE
    f regprocedure;
    r text;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proname IN (
              'db_now', 'queue_setting', 'configure_queue', 'queue_settings_json', 'check_epoch', 'insert_tasks',
              'claim_next_task', 'complete_task', 'fail_task', 'requeue_worker_tasks', 'demand_snapshot',
              'get_task', 'list_tasks', 'task_counts', 'notify_task_change', 'workers_json', 'get_worker',
              'list_workers', 'create_worker', 'set_worker_pod', 'transition_worker', 'worker_heartbeat',
              'list_worker_events', 'record_decision', 'set_decision_spawned', 'list_decisions',
              'is_timestamptz', 'insert_system_logs', 'list_system_logs', 'count_system_logs', 'lease_json',
              'acquire_leader_lease', 'renew_leader_lease', 'release_leader_lease', 'get_leader_lease')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %I', f, r);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', f);
        END IF;
    END LOOP;
END
$$;
