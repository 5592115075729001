-- 0040_decisions: the Scaler's decisions, one row per cycle that acted or wanted to.
--
-- Each function is defined in exactly one file, its domain's (see 0010_leases.sql for how the
-- stores call them); 0090_grants.sql sets the privileges of all of them. Safe to run again, and
-- over the earlier layout (0002_functions, 0003_demand_snapshot, 0900_explain): CREATE OR REPLACE
-- with unchanged signatures, IF NOT EXISTS.

CREATE OR REPLACE FUNCTION record_decision(p_decision jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM check_epoch((p_decision ->> 'leader_epoch')::bigint);
    INSERT INTO scaling_decisions (
        at, cycle_number, leader_epoch, holder, inputs, spawn_count, drain_worker_ids,
        spawned_worker_ids, reasons, breaker, trace_id, kind)
    SELECT coalesce(r.at, now()), r.cycle_number, r.leader_epoch, r.holder, coalesce(r.inputs, '{}'::jsonb),
           coalesce(r.spawn_count, 0), coalesce(r.drain_worker_ids, '{}'), coalesce(r.spawned_worker_ids, '{}'),
           coalesce(r.reasons, '{}'), coalesce(r.breaker, '{}'::jsonb), r.trace_id, r.kind
    FROM jsonb_to_record(p_decision) AS r (
        at timestamptz, cycle_number bigint, leader_epoch bigint, holder text, inputs jsonb, spawn_count integer,
        drain_worker_ids text[], spawned_worker_ids text[], reasons text[], breaker jsonb, trace_id text, kind text)
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

-- Besides starts and clean stops, orchestrator_events holds the incidents the orchestrator rode out:
-- a database outage (recorded once the database is back: `at` is when it began, `ended_at` when it
-- ended, `details` what waited) and an infrastructure fault (many workers silent at once).
ALTER TABLE orchestrator_events ADD COLUMN IF NOT EXISTS ended_at timestamptz;
ALTER TABLE orchestrator_events ADD COLUMN IF NOT EXISTS details jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE orchestrator_events DROP CONSTRAINT IF EXISTS orchestrator_events_kind_check;
ALTER TABLE orchestrator_events ADD CONSTRAINT orchestrator_events_kind_check
    CHECK (kind IN ('started', 'stopped', 'database_outage', 'infrastructure_fault'));

-- A start, clean stop or ridden-out incident of the orchestrator (see orchestrator_events). Not
-- fenced: a stop is recorded by whoever stops it, after the lease is given up; an outage by the
-- Scaler that saw it, whoever leads by then. `p_at` is for fixtures that replay history, and for
-- an outage the time it began.
DROP FUNCTION IF EXISTS record_orchestrator_event(text, text, text, timestamptz);
CREATE OR REPLACE FUNCTION record_orchestrator_event(
    p_kind text, p_holder text, p_reason text, p_at timestamptz DEFAULT NULL,
    p_ended_at timestamptz DEFAULT NULL, p_details jsonb DEFAULT NULL
) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO orchestrator_events (at, kind, holder, reason, ended_at, details)
    VALUES (coalesce(p_at, now()), p_kind, p_holder, p_reason, p_ended_at, coalesce(p_details, '{}'::jsonb))
    RETURNING id
$$;

-- Newest `p_limit` starts and stops of the window, oldest first.
CREATE OR REPLACE FUNCTION list_orchestrator_events(
    p_since timestamptz DEFAULT NULL, p_until timestamptz DEFAULT NULL, p_limit integer DEFAULT 1000
) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.at, s.id), '[]'::jsonb)
    FROM (SELECT * FROM orchestrator_events e
          WHERE (p_since IS NULL OR e.at >= p_since) AND (p_until IS NULL OR e.at < p_until)
          ORDER BY e.at DESC, e.id DESC LIMIT p_limit) s
$$;
