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
--
-- The check locks the lease row FOR SHARE until the caller's transaction ends, and every fenced
-- write calls it in the same transaction (one SQL function call) as the write it guards. So the
-- check and the write are never split by a takeover: a takeover (an UPDATE of that row) waits for
-- a fenced write already past its check to commit, and a fenced write that meets a takeover in
-- flight waits for it, then re-reads the row (READ COMMITTED re-checks a locked row), finds the new
-- epoch and is refused.
CREATE OR REPLACE FUNCTION check_epoch(p_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_epoch IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM orchestrator_leases WHERE epoch = p_epoch FOR SHARE;
    IF NOT FOUND THEN
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
--
-- Each incarnation of a Scaler holds the lease as `<lineage>#<its own id>`, the lineage being stable
-- across Ray restarts of one actor. With p_successor_of = its lineage (its first call after it
-- started), an unexpired lease held by another incarnation of that lineage is taken over at once,
-- with a new epoch: a restarted Scaler need not wait out its predecessor's lease, and the predecessor
-- (dead, or alive behind a partition) never shares its epoch. Any other holder's lease is taken only
-- once it has expired.
DROP FUNCTION IF EXISTS acquire_leader_lease(text, text, double precision);
CREATE OR REPLACE FUNCTION acquire_leader_lease(
    p_name text, p_holder text, p_ttl_s double precision, p_successor_of text DEFAULT NULL
)
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
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= now()
       OR (p_successor_of IS NOT NULL AND left(l.holder, length(p_successor_of) + 1) = p_successor_of || '#');
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
