-- migrate: outside-transaction
-- 0075_indexes: indexes of the tables that grow, built without blocking their writers.
--
-- The marker above makes store/migrate.py run each statement of this file on its own, outside the
-- migration's transaction (CREATE INDEX CONCURRENTLY cannot run in one): a build on a large table
-- never holds a lock that stops claims, heartbeats or log inserts. An interrupted build leaves an
-- invalid index, which the runner drops and builds again. Only CREATE/DROP INDEX CONCURRENTLY here.

-- The live workers (every cycle lists them), however many terminated rows retention keeps.
CREATE INDEX CONCURRENTLY IF NOT EXISTS workers_live_idx ON workers (created_at, id) WHERE status <> 'terminated';
-- Retention of terminated workers' rows, oldest first.
CREATE INDEX CONCURRENTLY IF NOT EXISTS workers_terminated_idx ON workers (terminated_at) WHERE status = 'terminated';
