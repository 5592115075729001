-- 0003_demand_snapshot: a cheaper demand_snapshot (one Scaler cycle reads it every time).
--
-- Measured with 100,000 Queued tasks from 1,000 users (bench/fleet_scale.py): the 0002 version
-- LEFT JOINed every Queued task to its dependency (a hash join over the whole table) and took
-- ~72 ms freshly inserted, ~40 ms after VACUUM. Only tasks that have a dependency need the join:
-- the others are counted straight from the partial index tasks_queued_user_idx (user_id,
-- depends_on), and the few with a dependency are found through the partial index below. Same
-- answer, ~23 ms fresh and ~10 ms after VACUUM. A per-user LIMIT/skip-scan variant (claimable is
-- capped at the limit per user) measured 23 ms / 18 ms: not better, so not taken; per-user
-- counters kept by triggers would add a write on every claim and were not needed for the target.
-- The claim (claim_next_task) is unchanged, so the per-user limit holds exactly as before; this
-- is an estimate of demand for the policy, read in one statement (one snapshot).
-- Safe to run again.

-- Queued tasks that wait for another task: the only ones demand_snapshot joins.
CREATE INDEX IF NOT EXISTS tasks_queued_dep_idx ON tasks (depends_on) INCLUDE (user_id)
    WHERE status = 'Queued' AND depends_on IS NOT NULL;

CREATE OR REPLACE FUNCTION demand_snapshot(p_per_user_limit integer DEFAULT NULL) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH lim AS (
        SELECT coalesce(p_per_user_limit::bigint, queue_setting('per_user_concurrency_limit', 3)) AS l
    ), queued AS (
        -- every Queued task, and those that wait for nothing: no join
        SELECT user_id, count(*) AS n, count(*) FILTER (WHERE depends_on IS NULL) AS free
        FROM tasks WHERE status = 'Queued' GROUP BY user_id
    ), dep_ready AS (
        -- Queued tasks whose dependency is Complete
        SELECT t.user_id, count(*) AS n
        FROM tasks t JOIN tasks d ON d.id = t.depends_on AND d.status = 'Complete'
        WHERE t.status = 'Queued' AND t.depends_on IS NOT NULL
        GROUP BY t.user_id
    ), busy AS (
        SELECT user_id, count(*) AS n FROM tasks WHERE status = 'In Progress' GROUP BY user_id
    )
    SELECT jsonb_build_object(
        'queued', coalesce((SELECT sum(n) FROM queued), 0),
        'claimable', coalesce((
            SELECT sum(least(q.free + coalesce(r.n, 0), greatest(0, lim.l - coalesce(b.n, 0))))
            FROM queued q LEFT JOIN dep_ready r USING (user_id) LEFT JOIN busy b USING (user_id) CROSS JOIN lim), 0),
        'in_progress', coalesce((SELECT sum(n) FROM busy), 0),
        'taken_at', extract(epoch FROM now()))
$$;

-- CREATE OR REPLACE keeps 0002's grants; repeated here so this file stands alone.
REVOKE ALL ON FUNCTION demand_snapshot(integer) FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION demand_snapshot(integer) TO service_role;
    END IF;
END
$$;
