-- migrate: outside-transaction
-- native/0076_queue_indexes: the queue's indexes of this change, built CONCURRENTLY (see
-- 0075_indexes.sql): a queue that is live when it migrates keeps claiming meanwhile.

-- A user's oldest ready task: queue_users_adjust moves a user's head with one probe of it, and a
-- claim of given task types looks through it (0020_tasks.sql).
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_ready_user_idx ON tasks (user_id, created_at, id)
    WHERE status = 'Queued' AND NOT blocked;
-- Retention of finished tasks, oldest first (retain_finished_tasks).
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_finished_idx ON tasks (finished_at)
    WHERE status IN ('Complete', 'Failed', 'Cancelled');
-- The claim and the demand count a user's In Progress tasks in queue_users now: this index only
-- cost every claim a write.
DROP INDEX CONCURRENTLY IF EXISTS tasks_in_progress_user_idx;
