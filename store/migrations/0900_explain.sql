-- 0900_explain: what `orchestrator explain` needs beyond the Store's list_* functions.
--
-- explain reads only the database and must answer within seconds on a month of history, so each
-- of its questions is one indexed query here rather than a scan in Python. Safe to run again.

-- The orchestrator's own log rows by time: the "was it alive?" question skips the (many) worker rows.
CREATE INDEX IF NOT EXISTS system_logs_orchestrator_at_idx ON system_logs (at) WHERE source_type = 'orchestrator';

-- Gaps longer than p_threshold_s between the orchestrator's signals (a scaling_decisions row or
-- an orchestrator system_logs row) that touch [p_since, p_until], with the last signal before the
-- window and the first after it, so a gap that began before the window is reported from its start.
CREATE OR REPLACE FUNCTION explain_silences(
    p_since timestamptz, p_until timestamptz, p_threshold_s double precision
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH before AS (
        SELECT max(b.at) AS at FROM (
            (SELECT d.at FROM scaling_decisions d WHERE d.at < p_since ORDER BY d.at DESC LIMIT 1)
            UNION ALL
            (SELECT l.at FROM system_logs l
             WHERE l.source_type = 'orchestrator' AND l.at < p_since ORDER BY l.at DESC LIMIT 1)
        ) b
    ), after AS (
        SELECT min(a.at) AS at FROM (
            (SELECT d.at FROM scaling_decisions d WHERE d.at > p_until ORDER BY d.at LIMIT 1)
            UNION ALL
            (SELECT l.at FROM system_logs l
             WHERE l.source_type = 'orchestrator' AND l.at > p_until ORDER BY l.at LIMIT 1)
        ) a
    ), inside AS (
        SELECT d.at FROM scaling_decisions d WHERE d.at BETWEEN p_since AND p_until
        UNION
        SELECT l.at FROM system_logs l WHERE l.source_type = 'orchestrator' AND l.at BETWEEN p_since AND p_until
    ), signals AS (
        SELECT at FROM inside
        UNION SELECT at FROM before WHERE at IS NOT NULL
        UNION SELECT at FROM after WHERE at IS NOT NULL
    ), gaps AS (
        SELECT lag(at) OVER (ORDER BY at) AS gap_start, at AS gap_end FROM signals
    )
    SELECT jsonb_build_object(
        'last_before', (SELECT at FROM before),
        'first_after', (SELECT at FROM after),
        'first_inside', (SELECT min(at) FROM inside),
        'last_inside', (SELECT max(at) FROM inside),
        'signals_inside', (SELECT count(*) FROM inside),
        'gaps', coalesce(
            (SELECT jsonb_agg(jsonb_build_object('start', g.gap_start, 'end', g.gap_end) ORDER BY g.gap_end)
             FROM gaps g
             WHERE g.gap_start IS NOT NULL
               AND g.gap_end - g.gap_start > make_interval(secs => p_threshold_s)),
            '[]'::jsonb))
$$;

-- The tasks a worker holds or last held, through tasks_worker_idx (oldest claim first).
CREATE OR REPLACE FUNCTION explain_worker_tasks(p_worker_id text, p_limit integer DEFAULT 1000) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.claimed_at NULLS LAST, s.id), '[]'::jsonb)
    FROM (SELECT * FROM tasks t WHERE t.worker_id = p_worker_id
          ORDER BY t.claimed_at NULLS LAST, t.id LIMIT p_limit) s
$$;

-- Same privileges as 0002's functions: only service_role and direct connections may call them.
DO $$
DECLARE
    f regprocedure;
    r text;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND p.proname IN ('explain_silences', 'explain_worker_tasks')
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
