-- 0032_warm_pool_states: a worker row may be parked in the warm pool (stopping, stopped, resuming),
-- and says since when it is in its status.
--
-- The status check of 0001_schema.sql lists the states a row may hold; the warm pool adds three
-- (fleet.models.WorkerState): `stopping` (drained; stop asked of the provider), `stopped` (pod
-- stopped, its disk kept for a resume) and `resuming` (resume asked, no heartbeat since). Nothing
-- else changes: a stopped worker's row is live (not `terminated`), so its pod is no orphan, its
-- credential stays valid until it is terminated (0005_worker_credentials.sql revokes on
-- `terminated` only), and retention never deletes it. Safe to run again.

ALTER TABLE workers DROP CONSTRAINT IF EXISTS workers_status_check;
ALTER TABLE workers ADD CONSTRAINT workers_status_check CHECK (
    status IN ('spawning', 'active', 'draining', 'stopping', 'stopped', 'resuming', 'terminating', 'terminated', 'error')
);

-- When the row entered its status (`status_since`), kept from its worker_events: the Scaler's policy
-- needs it for the warm pool (how long a pod has been stopped; one kept past warm_pool_keep_s is
-- retired), and reading it from the row costs the cycle nothing, where the events would cost a
-- lookup per row (and retention may have deleted them). Set from each event that moves the row
-- (its creation, a transition; a note, from = to, does not), at the event's own time.
ALTER TABLE workers ADD COLUMN IF NOT EXISTS status_since timestamptz;
UPDATE workers w
SET status_since = (SELECT max(e.at) FROM worker_events e
                    WHERE e.worker_id = w.id AND e.to_status = w.status AND e.from_status IS DISTINCT FROM e.to_status)
WHERE w.status_since IS NULL AND w.status <> 'terminated';

CREATE OR REPLACE FUNCTION worker_status_since() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workers SET status_since = NEW.at
    WHERE id = NEW.worker_id AND status = NEW.to_status AND status_since IS DISTINCT FROM NEW.at;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS worker_events_status_since ON worker_events;
CREATE TRIGGER worker_events_status_since AFTER INSERT ON worker_events
    FOR EACH ROW WHEN (NEW.from_status IS DISTINCT FROM NEW.to_status) EXECUTE FUNCTION worker_status_since();
