-- 0010_leases: the leader lease and the fencing of a deposed leader's writes, by the database clock.
--
-- Every store operation is a SQL function: PostgresStore calls them with `SELECT fn(p_arg => ...)`,
-- SupabaseStore through PostgREST `rpc/fn` with the same named arguments, so both behave the same
-- by construction; results are jsonb (or scalars), parsed by one Python implementation
-- (store/rpc.py). Each function is defined in exactly one file, its domain's; privileges for all
-- of them are set last (0090_grants.sql).
--
-- Safe to run again, and on a database migrated with the earlier layout (0002_functions,
-- 0003_demand_snapshot, 0900_explain): CREATE OR REPLACE with unchanged signatures, IF NOT EXISTS.
--
-- Fenced writes raise SQLSTATE 'ORF01' ("stale epoch ..."), mapped to store.base.StaleEpoch.

-- The database's clock: leases are measured by it, and Store.now() reads it.
CREATE OR REPLACE FUNCTION db_now() RETURNS timestamptz
LANGUAGE sql STABLE AS $$ SELECT now() $$;

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

-- Renewal is acquire_leader_lease by the same holder; the separate renew function was never called.
DROP FUNCTION IF EXISTS renew_leader_lease(text, text, bigint, double precision);
