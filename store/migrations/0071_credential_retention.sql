-- 0071_credential_retention: a worker's revoked credential goes with its row.
--
-- Retention deletes terminated workers' rows (0070); their credential rows (0005), revoked at
-- termination, would otherwise pile up forever. A deleted row is as good as a revoked one: a token
-- whose `jti` has no row is refused ("not issued"), and a login role whose name has no row is "no
-- worker of this database". A login role not yet dropped keeps its row: reap_worker_credentials
-- needs it to drop the role. Safe to run again.

CREATE OR REPLACE FUNCTION forget_revoked_credentials() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM worker_credentials c
    USING gone g
    WHERE c.worker_id = g.id
      AND c.revoked_at IS NOT NULL
      AND (c.kind = 'token' OR c.role_dropped_at IS NOT NULL);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS workers_forget_revoked_credentials ON workers;
CREATE TRIGGER workers_forget_revoked_credentials
    AFTER DELETE ON workers
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION forget_revoked_credentials();
