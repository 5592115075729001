-- 0030_workers: worker rows (one per pod lifecycle), their compare-and-set transitions and audit trail.
--
-- Each function is defined in exactly one file, its domain's (see 0010_leases.sql for how the
-- stores call them); 0090_grants.sql sets the privileges of all of them. Safe to run again, and
-- over the earlier layout (0002_functions, 0003_demand_snapshot, 0900_explain): CREATE OR REPLACE
-- with unchanged signatures, IF NOT EXISTS.

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
        PERFORM queue_worker_changed(p_worker_id);
    END IF;
    RETURN get_worker(p_worker_id);
END
$$;

CREATE OR REPLACE FUNCTION set_worker_pod(
    p_worker_id text, p_pod_id text, p_gpu_type text DEFAULT NULL, p_metadata jsonb DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workers
    SET pod_id = p_pod_id, gpu_type = coalesce(p_gpu_type, gpu_type),
        metadata = metadata || coalesce(p_metadata, '{}'::jsonb)
    WHERE id = p_worker_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM queue_worker_changed(p_worker_id);
    RETURN true;
END
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
    PERFORM queue_worker_changed(p_worker_id);
    RETURN true;
END
$$;

-- A note on a worker's record that does not change its state: a pod terminate the provider refused
-- (retried with backoff), an extra pod with the worker's name that was terminated. It is a
-- worker_events row with from_status = to_status = the current status, so `explain --worker` shows
-- it in order among the transitions, and p_metadata is merged into the row (the latest facts, e.g.
-- `terminate_failed`). Fenced when the Scaler writes it. False when there is no such row.
CREATE OR REPLACE FUNCTION note_worker(
    p_worker_id text, p_reason text, p_epoch bigint DEFAULT NULL, p_metadata jsonb DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    PERFORM check_epoch(p_epoch);
    UPDATE workers SET metadata = metadata || coalesce(p_metadata, '{}'::jsonb)
    WHERE id = p_worker_id
    RETURNING status INTO v_status;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO worker_events (worker_id, at, from_status, to_status, reason, epoch)
    VALUES (p_worker_id, now(), v_status, v_status, coalesce(p_reason, ''), p_epoch);
    RETURN true;
END
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
