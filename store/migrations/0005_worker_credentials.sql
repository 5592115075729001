-- 0005_worker_credentials: each worker's own credential, and the one check every worker-facing function makes.
--
-- A pod never gets the orchestrator's own credential (README: "What a worker's credential may do").
-- Direct Postgres: a login role per worker (`orchestrator_w_<database hash>_<worker id>`, random
-- password, VALID UNTIL the pod's longest life), member of the NOLOGIN group `orchestrator_worker`,
-- which has no table privileges and EXECUTE only on the worker functions (0090_grants.sql makes those
-- SECURITY DEFINER). Supabase REST: a JWT per worker (role `orchestrator_worker`, claims `worker_id`
-- and `jti`), signed by the orchestrator with the project's JWT secret; its `jti` is recorded here.
-- Each worker-facing function starts with `PERFORM assert_acting_worker(p_worker_id)` (logs:
-- `assert_acting_worker_logs(p_records)`): a worker acts only as itself; the orchestrator (its own
-- connection, the service role) passes unchanged.
--
-- Roles are cluster-wide, so a role's name carries a hash of the database's name: two databases of
-- one server (tests clone one per test) never touch each other's workers. Creating and dropping
-- roles needs CREATEROLE on the orchestrator's connection (issue_worker_credential says so, naming
-- it, when it is missing). Safe to run again.

-- The group. Created once per server; a migrating role without CREATEROLE leaves a warning and no
-- group, and issuing a login credential then fails naming what is missing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orchestrator_worker') THEN
        BEGIN
            CREATE ROLE orchestrator_worker NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database of this server created it at the same moment
            WHEN insufficient_privilege THEN
                RAISE WARNING 'role orchestrator_worker not created: the migrating role lacks CREATEROLE; pods '
                    'cannot get credentials of their own until `orchestrator migrate` runs with it';
        END;
    END IF;
    -- Supabase: PostgREST's authenticator switches to the role a worker's JWT names.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orchestrator_worker')
       AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
        BEGIN
            GRANT orchestrator_worker TO authenticator;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'orchestrator_worker not granted to authenticator: worker JWTs will be refused';
        END;
    END IF;
END
$$;

-- One row per worker that was given a credential. Only the orchestrator reads it (RLS on, no policy,
-- no grant to the worker group): a worker's password is kept only until the worker is promoted (its
-- pod has it by then), so a second create call for the same pod gets the same one.
CREATE TABLE IF NOT EXISTS worker_credentials (
    worker_id       text PRIMARY KEY,
    kind            text NOT NULL CONSTRAINT worker_credentials_kind_check CHECK (kind IN ('login', 'token')),
    role_name       text UNIQUE,  -- login: the worker's Postgres role
    password        text,         -- login: until the worker is promoted, then NULL
    token_id        uuid,         -- token: the `jti` of the worker's JWT
    issued_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoke_reason   text,
    role_dropped_at timestamptz   -- login: when the role was dropped (a failed drop is retried by reap)
);
ALTER TABLE worker_credentials ENABLE ROW LEVEL SECURITY;
-- The live ones, read by reap_worker_credentials every Scaler cycle however many revoked rows piled up.
CREATE INDEX IF NOT EXISTS worker_credentials_live_idx ON worker_credentials (worker_id) WHERE revoked_at IS NULL;

-- The role names of this database's workers start with this (a hash of the database name).
CREATE OR REPLACE FUNCTION worker_role_prefix() RETURNS text
LANGUAGE sql STABLE AS $$ SELECT 'orchestrator_w_' || left(md5(current_database()), 8) || '_' $$;

-- At most 63 bytes: a long or unusual worker id is hashed.
CREATE OR REPLACE FUNCTION worker_role_name(p_worker_id text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT worker_role_prefix() || CASE WHEN p_worker_id ~ '^[a-z0-9_-]{1,39}$' THEN p_worker_id
                                       ELSE left(md5(p_worker_id), 32) END
$$;

-- The worker the caller acts as: NULL for the orchestrator (its own connection, the service role).
-- A worker's login role is known by session_user (unchanged by SECURITY DEFINER and SET ROLE); a
-- worker's JWT by the claims PostgREST verified and set (role orchestrator_worker, worker_id, jti).
-- A revoked, foreign or unknown worker credential is refused here (insufficient_privilege).
CREATE OR REPLACE FUNCTION acting_worker() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_cred worker_credentials;
    v_claims jsonb;
BEGIN
    SELECT * INTO v_cred FROM worker_credentials WHERE role_name = session_user::text;
    IF FOUND THEN
        IF v_cred.revoked_at IS NOT NULL THEN
            RAISE EXCEPTION 'the credential of worker % was revoked (%)', v_cred.worker_id, v_cred.revoke_reason
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN v_cred.worker_id;
    END IF;
    IF starts_with(session_user::text, 'orchestrator_w_') THEN
        RAISE EXCEPTION 'role % is no worker of this database', session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
    v_claims := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
    IF v_claims ->> 'role' IS DISTINCT FROM 'orchestrator_worker' THEN
        RETURN NULL;  -- the orchestrator
    END IF;
    SELECT * INTO v_cred FROM worker_credentials WHERE worker_id = v_claims ->> 'worker_id' AND kind = 'token';
    IF NOT FOUND OR v_cred.token_id::text IS DISTINCT FROM v_claims ->> 'jti' THEN
        RAISE EXCEPTION 'this worker token was not issued for worker %', v_claims ->> 'worker_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF v_cred.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'the credential of worker % was revoked (%)', v_cred.worker_id, v_cred.revoke_reason
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN v_cred.worker_id;
END
$$;

-- The first line of every worker-facing function: a worker acts only as itself.
CREATE OR REPLACE FUNCTION assert_acting_worker(p_worker_id text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_me text := acting_worker();
BEGIN
    IF v_me IS NOT NULL AND p_worker_id IS DISTINCT FROM v_me THEN
        RAISE EXCEPTION 'worker % may act only as itself, not as worker %', v_me, p_worker_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- insert_system_logs' first line: a worker inserts only its own records (source_type worker,
-- source_id and worker_id its own id), never the orchestrator's signals or another worker's lines.
CREATE OR REPLACE FUNCTION assert_acting_worker_logs(p_records jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_me text := acting_worker();
    v_bad bigint;
BEGIN
    IF v_me IS NULL THEN
        RETURN;
    END IF;
    SELECT e.ord - 1 INTO v_bad
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(p_records) = 'array' THEN p_records ELSE '[]' END)
         WITH ORDINALITY AS e (rec, ord)
    WHERE jsonb_typeof(e.rec) <> 'object'
       OR e.rec ->> 'source_type' IS DISTINCT FROM 'worker'
       OR e.rec ->> 'source_id' IS DISTINCT FROM v_me
       OR coalesce(e.rec ->> 'worker_id', v_me) <> v_me
    ORDER BY e.ord LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'worker % may insert only its own log records (source_type worker, source_id %): record % is not',
            v_me, v_me, v_bad USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION worker_credential_json(p_cred worker_credentials) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'worker_id', p_cred.worker_id, 'kind', p_cred.kind, 'role_name', p_cred.role_name,
        'password', p_cred.password, 'token_id', p_cred.token_id, 'issued_at', p_cred.issued_at,
        'expires_at', p_cred.expires_at, 'revoked_at', p_cred.revoked_at)
$$;

-- 244 random bits (gen_random_uuid draws from pg_strong_random), made in the database: the password
-- never travels in a statement's text or parameters, so no statement log can hold it.
CREATE OR REPLACE FUNCTION new_worker_password() RETURNS text
LANGUAGE sql VOLATILE AS $$ SELECT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '') $$;

-- The worker's credential, created on the first call and the same on every later one (the Scaler's
-- create call and the lifecycle's may both build the pod's env; the provider finds one pod by name).
-- p_kind: 'login' (a Postgres role) or 'token' (a JWT's id; the orchestrator signs the JWT).
CREATE OR REPLACE FUNCTION issue_worker_credential(p_worker_id text, p_kind text, p_valid_for_s double precision)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_cred worker_credentials;
    v_until timestamptz := now() + make_interval(secs => p_valid_for_s);
    v_role text;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('login', 'token') THEN
        RAISE EXCEPTION 'credential kind must be login or token, not %', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_valid_for_s IS NULL OR p_valid_for_s <= 0 THEN
        RAISE EXCEPTION 'valid_for_s must be positive, not %', p_valid_for_s USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the row lock serialises two callers for one worker
    SELECT status INTO v_status FROM workers WHERE id = p_worker_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no worker %: a credential is made for a worker row, written before its pod', p_worker_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF v_status = 'terminated' THEN
        RAISE EXCEPTION 'worker % is terminated: it gets no credential', p_worker_id USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO v_cred FROM worker_credentials WHERE worker_id = p_worker_id FOR UPDATE;
    IF FOUND THEN
        IF v_cred.revoked_at IS NOT NULL THEN
            RAISE EXCEPTION 'the credential of worker % was revoked (%): it gets no other', p_worker_id, v_cred.revoke_reason
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF v_cred.kind <> p_kind THEN
            RAISE EXCEPTION 'worker % already has a % credential, not %', p_worker_id, v_cred.kind, p_kind
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF v_cred.kind = 'login' AND v_cred.password IS NULL THEN
            -- promoted, so its pod had the password; a new pod for it needs a new one
            UPDATE worker_credentials SET password = new_worker_password(), expires_at = v_until
            WHERE worker_id = p_worker_id RETURNING * INTO v_cred;
            EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L VALID UNTIL %L', v_cred.role_name, v_cred.password, v_until);
        END IF;
        RETURN worker_credential_json(v_cred);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orchestrator_worker') THEN
        RAISE EXCEPTION 'the role orchestrator_worker does not exist: `orchestrator migrate` ran without CREATEROLE'
            USING ERRCODE = 'undefined_object', HINT = 'run `orchestrator migrate` again with a role that has CREATEROLE';
    END IF;
    IF p_kind = 'token' THEN
        INSERT INTO worker_credentials (worker_id, kind, token_id, expires_at)
        VALUES (p_worker_id, 'token', gen_random_uuid(), v_until)
        RETURNING * INTO v_cred;
        RETURN worker_credential_json(v_cred);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_user AND (rolcreaterole OR rolsuper)) THEN
        RAISE EXCEPTION 'pods get credentials of their own, which needs CREATEROLE: the orchestrator''s database role % lacks it',
            current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('ALTER ROLE %I CREATEROLE; or set database.worker_credentials: shared to hand pods '
                                'the orchestrator''s own credential (not recommended)', current_user);
    END IF;
    v_role := worker_role_name(p_worker_id);
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
        PERFORM drop_worker_role(v_role);  -- left behind (e.g. a database restored from a backup)
    END IF;
    INSERT INTO worker_credentials (worker_id, kind, role_name, password, expires_at)
    VALUES (p_worker_id, 'login', v_role, new_worker_password(), v_until)
    RETURNING * INTO v_cred;
    EXECUTE format(
        'CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
        'CONNECTION LIMIT 5 PASSWORD %L VALID UNTIL %L IN ROLE orchestrator_worker',
        v_role, v_cred.password, v_until);
    -- A pod that opens a transaction and sits in it would hold the row and advisory locks its claim
    -- took (other workers' claims of that user would wait): it is ended. No statement of a worker
    -- takes minutes either.
    EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', v_role, '30s');
    EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', v_role, '2min');
    RETURN worker_credential_json(v_cred);
END
$$;

-- No more logins (NOLOGIN), its open sessions ended, then the role dropped. Each step on its own:
-- a step that fails (no privilege to signal, an object it still owns) is a WARNING, and
-- reap_worker_credentials tries the drop again. True when the role is gone.
CREATE OR REPLACE FUNCTION drop_worker_role(p_role text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
        RETURN true;
    END IF;
    BEGIN
        EXECUTE format('ALTER ROLE %I NOLOGIN', p_role);
    EXCEPTION WHEN others THEN
        RAISE WARNING 'worker role %: NOLOGIN failed: %', p_role, SQLERRM;
    END;
    BEGIN
        PERFORM pg_terminate_backend(a.pid) FROM pg_stat_activity a WHERE a.usename = p_role;
    EXCEPTION WHEN others THEN
        RAISE WARNING 'worker role %: its sessions were not ended: %', p_role, SQLERRM;
    END;
    BEGIN
        EXECUTE format('DROP ROLE %I', p_role);
    EXCEPTION WHEN others THEN
        RAISE WARNING 'worker role % not dropped (it can no longer log in): %', p_role, SQLERRM;
        RETURN false;
    END;
    RETURN true;
END
$$;

-- Revoke a worker's credential: a token is refused from now on, a login role can no longer connect.
-- False when the worker has none. Safe to repeat.
CREATE OR REPLACE FUNCTION revoke_worker_credential(p_worker_id text, p_reason text DEFAULT 'revoked')
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_cred worker_credentials;
BEGIN
    UPDATE worker_credentials
    SET revoked_at = coalesce(revoked_at, now()), revoke_reason = coalesce(revoke_reason, p_reason), password = NULL
    WHERE worker_id = p_worker_id
    RETURNING * INTO v_cred;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_cred.kind = 'login' AND v_cred.role_dropped_at IS NULL AND drop_worker_role(v_cred.role_name) THEN
        UPDATE worker_credentials SET role_dropped_at = now() WHERE worker_id = p_worker_id;
    END IF;
    RETURN true;
END
$$;

-- What a crash left behind: credentials of workers that are terminated, gone or expired are revoked,
-- and roles of this database that no live credential names are dropped (a revoked role whose drop
-- failed, a role restored without its row). Returns {revoked: [worker ids], dropped_roles: [names]}.
CREATE OR REPLACE FUNCTION reap_worker_credentials() RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v record;
    v_revoked text[] := '{}';
    v_dropped text[] := '{}';
    v_prefix text := worker_role_prefix();
BEGIN
    FOR v IN
        SELECT c.worker_id,
               CASE WHEN w.id IS NULL THEN 'worker row gone'
                    WHEN w.status = 'terminated' THEN 'worker terminated'
                    ELSE 'expired' END AS reason
        FROM worker_credentials c LEFT JOIN workers w ON w.id = c.worker_id
        WHERE c.revoked_at IS NULL AND (w.id IS NULL OR w.status = 'terminated' OR c.expires_at < now())
        ORDER BY c.worker_id
    LOOP
        PERFORM revoke_worker_credential(v.worker_id, 'reaped: ' || v.reason);
        v_revoked := v_revoked || v.worker_id;
    END LOOP;
    FOR v IN
        SELECT r.rolname::text AS rolname FROM pg_roles r
        WHERE starts_with(r.rolname::text, v_prefix)
          AND NOT EXISTS (SELECT 1 FROM worker_credentials c WHERE c.role_name = r.rolname::text AND c.revoked_at IS NULL)
        ORDER BY r.rolname
    LOOP
        IF drop_worker_role(v.rolname) THEN
            UPDATE worker_credentials SET role_dropped_at = now() WHERE role_name = v.rolname;
            v_dropped := v_dropped || v.rolname;
        END IF;
    END LOOP;
    RETURN jsonb_build_object('revoked', to_jsonb(v_revoked), 'dropped_roles', to_jsonb(v_dropped));
END
$$;

-- The credential follows the worker's row, whoever writes it: `terminated` revokes it in the same
-- transaction; leaving `spawning` (the worker was promoted: its pod has the password) forgets the
-- password.
CREATE OR REPLACE FUNCTION worker_credentials_follow_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'terminated' THEN
        PERFORM revoke_worker_credential(NEW.id, 'worker terminated');
    ELSIF NEW.status <> 'spawning' THEN
        UPDATE worker_credentials SET password = NULL WHERE worker_id = NEW.id AND password IS NOT NULL;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS workers_credentials ON workers;
CREATE TRIGGER workers_credentials AFTER UPDATE OF status ON workers
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION worker_credentials_follow_row();
