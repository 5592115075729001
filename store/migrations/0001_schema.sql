-- 0001_schema: the orchestrator's own tables (schema `orchestrator`), indexes and row level security.
--
-- The queue's table lives in the profile's folder (native/) or is the app's (reigh/).
--
-- Written to be safe to run again (IF NOT EXISTS everywhere), so the output of
-- `orchestrator migrate --sql` can be pasted into a Supabase SQL editor more than once.

-- Workers: one row per pod lifecycle, written before the pod is created (intent).
CREATE TABLE IF NOT EXISTS workers (
    id                 text PRIMARY KEY,
    status             text NOT NULL DEFAULT 'spawning'
                       CONSTRAINT workers_status_check
                       CHECK (status IN ('spawning', 'active', 'draining', 'terminating', 'terminated', 'error')),
    pod_id             text,
    gpu_type           text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    promoted_at        timestamptz,
    last_heartbeat_at  timestamptz,  -- NULL until the first real heartbeat: never default now()
    terminated_at      timestamptz,
    termination_reason text,
    trace_context      text,         -- W3C traceparent of the lifecycle anchor span
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS workers_status_idx ON workers (status);

-- Append-only audit trail of worker transitions.
CREATE TABLE IF NOT EXISTS worker_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_id   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    from_status text,  -- NULL for the row's creation
    to_status   text NOT NULL,
    reason      text NOT NULL,
    epoch       bigint  -- leader epoch of the writer, when the Scaler wrote it
);
CREATE INDEX IF NOT EXISTS worker_events_worker_at_idx ON worker_events (worker_id, at);
CREATE INDEX IF NOT EXISTS worker_events_at_idx ON worker_events (at);

-- One row per Scaler cycle that changed or wanted to change something.
CREATE TABLE IF NOT EXISTS scaling_decisions (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                 timestamptz NOT NULL DEFAULT now(),
    cycle_number       bigint NOT NULL,
    leader_epoch       bigint NOT NULL,
    holder             text NOT NULL,
    inputs             jsonb NOT NULL DEFAULT '{}'::jsonb,
    spawn_count        integer NOT NULL DEFAULT 0,
    drain_worker_ids   text[] NOT NULL DEFAULT '{}',
    spawned_worker_ids text[] NOT NULL DEFAULT '{}',
    reasons            text[] NOT NULL DEFAULT '{}',
    breaker            jsonb NOT NULL DEFAULT '{}'::jsonb,
    trace_id           text,
    -- What the decision amounts to, as the policy decided it (fleet.models.DecisionKind): scale_up,
    -- probe, scale_down, steady, capped, breaker_open, probe_pending, scale_down_held.
    kind               text
);
CREATE INDEX IF NOT EXISTS scaling_decisions_at_idx ON scaling_decisions (at);

-- Starts and clean stops of the orchestrator (the leading Scaler taking the lease; `orchestrator down`,
-- the demo's end, SIGTERM), so `explain` tells a stopped orchestrator from a silent one.
CREATE TABLE IF NOT EXISTS orchestrator_events (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    kind   text NOT NULL CONSTRAINT orchestrator_events_kind_check CHECK (kind IN ('started', 'stopped')),
    holder text NOT NULL,  -- the Scaler's lease holder id
    reason text NOT NULL
);
CREATE INDEX IF NOT EXISTS orchestrator_events_at_idx ON orchestrator_events (at);

-- Log records of every process, written in batches by insert_system_logs().
CREATE TABLE IF NOT EXISTS system_logs (
    id           text PRIMARY KEY,  -- the producer's id: a replay never duplicates
    at           timestamptz NOT NULL,
    level        text NOT NULL
                 CONSTRAINT system_logs_level_check
                 CHECK (level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')),
    source_type  text NOT NULL
                 CONSTRAINT system_logs_source_type_check CHECK (source_type IN ('orchestrator', 'worker')),
    source_id    text NOT NULL,
    message      text NOT NULL,
    logger       text,
    cycle_number bigint,
    worker_id    text,
    task_id      text,
    trace_id     text,
    attributes   jsonb NOT NULL DEFAULT '{}'::jsonb,
    inserted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS system_logs_at_idx ON system_logs (at);
CREATE INDEX IF NOT EXISTS system_logs_source_at_idx ON system_logs (source_id, at);

-- Leader leases. Epochs come from one sequence, so an epoch names one tenure of one lease.
CREATE SEQUENCE IF NOT EXISTS orchestrator_lease_epoch_seq;
CREATE TABLE IF NOT EXISTS orchestrator_leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    renewed_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS orchestrator_leases_epoch_idx ON orchestrator_leases (epoch);

-- Queue settings read by SQL functions, so workers in any language need not know them.
CREATE TABLE IF NOT EXISTS queue_settings (
    key   text PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO queue_settings (key, value)
VALUES ('per_user_concurrency_limit', 3), ('max_task_attempts', 3)
ON CONFLICT (key) DO NOTHING;

-- Row level security on every table, with no policy: only the table owner (direct connections),
-- roles with BYPASSRLS (Supabase's service_role) and the SQL functions called by them get through.
ALTER TABLE workers ENABLE ROW LEVEL SECURITY;
ALTER TABLE worker_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE scaling_decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE system_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orchestrator_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE queue_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE schema_migrations ENABLE ROW LEVEL SECURITY;

-- Supabase's API roles get nothing on these tables (they exist only on Supabase).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format(
                'REVOKE ALL ON workers, worker_events, scaling_decisions, orchestrator_events, system_logs, '
                'orchestrator_leases, queue_settings, schema_migrations FROM %I', r);
            EXECUTE format('REVOKE ALL ON SEQUENCE orchestrator_lease_epoch_seq FROM %I', r);
        END IF;
    END LOOP;
END
$$;
