-- 0070_retention: bounded growth of the orchestrator's own tables.
--
-- system_logs and worker_events by age, terminated workers' rows by the time they ended, finished
-- tasks (native profile only: the reigh profile's tasks are the app's and are never deleted here)
-- by the time they finished. The leading Scaler applies it (actors/scaler.py, retention phase) in
-- small batches, each its own short transaction: a batch locks only the rows it deletes, with SKIP
-- LOCKED, and finished tasks are never the rows a claim locks (a Queued task, a queue_users row).
-- retention_state says where each retained window starts, for `explain`. Safe to run again.

CREATE TABLE IF NOT EXISTS retention_state (
    target     text PRIMARY KEY,          -- system_logs, worker_events, workers, tasks
    keep_s     double precision NOT NULL, -- the window applied last
    cutoff     timestamptz NOT NULL,      -- rows older than this have been (or are being) deleted
    deleted    bigint NOT NULL DEFAULT 0, -- rows deleted so far, all runs
    applied_at timestamptz NOT NULL
);
ALTER TABLE retention_state ENABLE ROW LEVEL SECURITY;
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON retention_state FROM %I', r);
        END IF;
    END LOOP;
END
$$;

-- Deletes at most p_batch rows of p_target older than p_keep_s seconds (by the database clock);
-- returns how many. Call it again while it returns p_batch.
CREATE OR REPLACE FUNCTION apply_retention(p_target text, p_keep_s double precision, p_batch integer DEFAULT 1000)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_cutoff timestamptz;
    v_deleted integer := 0;
BEGIN
    IF p_keep_s IS NULL OR p_keep_s <= 0 THEN
        RAISE EXCEPTION 'keep_s must be positive, got %', p_keep_s USING ERRCODE = '22023';
    END IF;
    IF p_batch IS NULL OR p_batch < 1 OR p_batch > 100000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 100000, got %', p_batch USING ERRCODE = '22023';
    END IF;
    v_cutoff := now() - make_interval(secs => p_keep_s);
    CASE p_target
        WHEN 'system_logs' THEN
            -- MATERIALIZED: the batch is chosen (and locked) once, never re-run per row
            WITH batch AS MATERIALIZED (
                SELECT l.id FROM system_logs l WHERE l.at < v_cutoff ORDER BY l.at LIMIT p_batch
                FOR UPDATE SKIP LOCKED)
            DELETE FROM system_logs l USING batch b WHERE l.id = b.id;
            GET DIAGNOSTICS v_deleted = ROW_COUNT;
        WHEN 'worker_events' THEN
            WITH batch AS MATERIALIZED (
                SELECT e.id FROM worker_events e WHERE e.at < v_cutoff ORDER BY e.at LIMIT p_batch
                FOR UPDATE SKIP LOCKED)
            DELETE FROM worker_events e USING batch b WHERE e.id = b.id;
            GET DIAGNOSTICS v_deleted = ROW_COUNT;
        WHEN 'workers' THEN
            WITH batch AS MATERIALIZED (
                SELECT w.id FROM workers w
                WHERE w.status = 'terminated' AND w.terminated_at < v_cutoff
                ORDER BY w.terminated_at LIMIT p_batch
                FOR UPDATE SKIP LOCKED)
            DELETE FROM workers w USING batch b WHERE w.id = b.id AND w.status = 'terminated';
            GET DIAGNOSTICS v_deleted = ROW_COUNT;
        WHEN 'tasks' THEN
            -- the profile's own queue only (native: retain_finished_tasks); none in the reigh profile
            IF to_regprocedure('retain_finished_tasks(timestamptz,integer)') IS NOT NULL THEN
                EXECUTE 'SELECT retain_finished_tasks($1, $2)' INTO v_deleted USING v_cutoff, p_batch;
            END IF;
        ELSE
            RAISE EXCEPTION 'retention target % is not one of system_logs, worker_events, workers, tasks', p_target
                USING ERRCODE = '22023';
    END CASE;
    INSERT INTO retention_state AS s (target, keep_s, cutoff, deleted, applied_at)
    VALUES (p_target, p_keep_s, v_cutoff, v_deleted, now())
    ON CONFLICT (target) DO UPDATE
    SET keep_s = EXCLUDED.keep_s, cutoff = EXCLUDED.cutoff, deleted = s.deleted + EXCLUDED.deleted,
        applied_at = EXCLUDED.applied_at;
    RETURN v_deleted;
END
$$;

-- Where each retained window starts (for `explain`): one object per target retention has run on.
CREATE OR REPLACE FUNCTION retention_windows() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.target), '[]'::jsonb) FROM retention_state s
$$;
