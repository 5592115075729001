-- 0050_logs: log records of every process, and when the orchestrator itself went silent.
--
-- Each function is defined in exactly one file, its domain's (see 0010_leases.sql for how the
-- stores call them); 0090_grants.sql sets the privileges of all of them. Safe to run again, and
-- over the earlier layout (0002_functions, 0003_demand_snapshot, 0900_explain): CREATE OR REPLACE
-- with unchanged signatures, IF NOT EXISTS.

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
    SELECT assert_acting_worker_logs(p_records);  -- a worker inserts only its own (0005_worker_credentials)
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
        RETURNING system_logs.*
    ), hooked AS (
        -- the profile's copy of what was just inserted (reigh: the app's system_logs); a replay's
        -- duplicates were copied the first time
        SELECT queue_logs_inserted(coalesce(jsonb_agg(to_jsonb(ins)), '[]'::jsonb)) AS n FROM ins
    )
    SELECT jsonb_build_object(
        'inserted', (SELECT count(*) FROM ins WHERE (SELECT n FROM hooked) IS NOT NULL),
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

-- Counted through list_system_logs; this counter was used by tests only.
DROP FUNCTION IF EXISTS count_system_logs();

-- The orchestrator's own log rows by time: the "was it alive?" question skips the (many) worker rows.
CREATE INDEX IF NOT EXISTS system_logs_orchestrator_at_idx ON system_logs (at) WHERE source_type = 'orchestrator';

-- Gaps longer than p_threshold_s between the orchestrator's signals (a scaling_decisions row, an
-- orchestrator system_logs row, or a recorded start or stop) that touch [p_since, p_until], with the last signal before the
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
            UNION ALL
            (SELECT e.at FROM orchestrator_events e WHERE e.at < p_since ORDER BY e.at DESC LIMIT 1)
        ) b
    ), after AS (
        SELECT min(a.at) AS at FROM (
            (SELECT d.at FROM scaling_decisions d WHERE d.at > p_until ORDER BY d.at LIMIT 1)
            UNION ALL
            (SELECT l.at FROM system_logs l
             WHERE l.source_type = 'orchestrator' AND l.at > p_until ORDER BY l.at LIMIT 1)
            UNION ALL
            (SELECT e.at FROM orchestrator_events e WHERE e.at > p_until ORDER BY e.at LIMIT 1)
        ) a
    ), inside AS (
        SELECT d.at FROM scaling_decisions d WHERE d.at BETWEEN p_since AND p_until
        UNION
        SELECT l.at FROM system_logs l WHERE l.source_type = 'orchestrator' AND l.at BETWEEN p_since AND p_until
        UNION
        SELECT e.at FROM orchestrator_events e WHERE e.at BETWEEN p_since AND p_until
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
