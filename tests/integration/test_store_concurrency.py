"""Concurrent claimers (16): every task claimed exactly once, never more than the limit in progress per
user, never before its dependency completed; a task whose dependency can never complete is failed,
never claimed.

The limit is checked from the rows, not from the claimers' own counts, in two independent ways:
- a trigger keeps an exact per-user counter of In Progress tasks in a table whose CHECK refuses
  more than the limit (the counter row is updated under its row lock, so it is exact at every
  commit; a racy claim would make the second claimer's transaction fail) and records the maximum;
- a sampler on its own connection reads the per-user counts in consistent snapshots all along.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import psycopg

from fleet.models import WorkerState
from store.base import NewTask, TaskStatus
from store.postgres import PostgresStore

LIMIT = 3
TASKS = 1200
USERS = 50
CLAIMERS = 16
DEPENDENT_EVERY = 10  # one task in ten waits for the task 37 places before it

_AUDIT_SQL = f"""
CREATE TABLE test_user_in_progress (
    user_id text PRIMARY KEY,
    n integer NOT NULL DEFAULT 0 CHECK (n BETWEEN 0 AND {LIMIT}),
    max_n integer NOT NULL DEFAULT 0
);
CREATE TABLE test_claims (
    task_id text NOT NULL, worker_id text NOT NULL, at timestamptz DEFAULT clock_timestamp(),
    dependency_status text  -- the status of the task it waits for, as the claim saw it
);
CREATE FUNCTION test_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'In Progress' THEN
        INSERT INTO test_claims (task_id, worker_id, dependency_status)
        VALUES (NEW.id, NEW.worker_id, (SELECT d.status FROM tasks d WHERE d.id = NEW.depends_on));
        INSERT INTO test_user_in_progress AS u (user_id, n, max_n) VALUES (NEW.user_id, 1, 1)
        ON CONFLICT (user_id) DO UPDATE SET n = u.n + 1, max_n = greatest(u.max_n, u.n + 1);
    ELSIF OLD.status = 'In Progress' THEN
        UPDATE test_user_in_progress SET n = n - 1 WHERE user_id = OLD.user_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER test_audit AFTER UPDATE OF status ON tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION test_audit();
"""


def test_concurrent_claimers_respect_the_per_user_limit(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(_AUDIT_SQL.encode())
        # Durability of each commit is not under test; visibility and locking are unchanged.
        dbname = conn.info.dbname
        conn.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off'.encode())
    setup = PostgresStore(database_url, max_size=2)
    setup.configure_queue(per_user_limit=LIMIT, max_task_attempts=3)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    # Runs of 8 consecutive tasks from one user, so the oldest tasks keep hitting the limit; one in
    # ten waits for an earlier task (often of another user), so claims meet blocked tasks all along.
    setup.insert_tasks(
        [
            NewTask(
                task_type="t",
                user_id=f"u{(i // 8) % USERS}",
                id=f"task-{i:04d}",
                created_at=base + timedelta(milliseconds=i),
                depends_on=f"task-{i - 37:04d}" if i % DEPENDENT_EVERY == 0 and i >= 37 else None,
            )
            for i in range(TASKS)
        ]
    )
    # and a few wait for a task that will never complete: failed with the reason at once
    doomed = setup.insert_tasks(
        [NewTask(task_type="t", user_id="u0", id=f"doomed-{i}", depends_on="no-such-task") for i in range(5)]
    )
    workers = [f"w{i}" for i in range(CLAIMERS)]
    for worker in workers:
        setup.create_worker(worker, reason="test")
        setup.transition_worker(worker, WorkerState.SPAWNING, WorkerState.ACTIVE, "test")

    errors: list[BaseException] = []
    done = threading.Event()
    sampled_max = [0]
    samples = [0]

    def sampler() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM tasks "
                    "WHERE status = 'In Progress' GROUP BY user_id) s"
                ).fetchone()
                assert row is not None
                sampled_max[0] = max(sampled_max[0], int(row[0]))
                samples[0] += 1
                time.sleep(0.002)

    def claimer(worker: str, seed: int) -> None:
        rng = random.Random(seed)
        store = PostgresStore(database_url, min_size=1, max_size=1)
        held: list[str] = []
        idle_rounds = 0
        try:
            while True:
                task = store.claim_next_task(worker) if len(held) < 3 else None
                if task is not None:
                    held.append(task.id)
                    idle_rounds = 0
                    continue
                if held:
                    rng.shuffle(held)
                    for task_id in held[: rng.randint(1, len(held))]:
                        assert store.complete_task(task_id, worker)
                        held.remove(task_id)
                    continue
                if store.demand_snapshot().queued == 0:
                    return
                idle_rounds += 1
                time.sleep(0.001 * min(idle_rounds, 20))
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    sampling = threading.Thread(target=sampler)
    sampling.start()
    threads = [threading.Thread(target=claimer, args=(w, i)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    sampling.join()
    assert not errors, errors[:3]

    with psycopg.connect(database_url, autocommit=True) as conn:
        claims = conn.execute("SELECT task_id FROM test_claims").fetchall()
        early = conn.execute(
            "SELECT task_id, dependency_status FROM test_claims "
            "WHERE dependency_status IS DISTINCT FROM 'Complete' AND task_id IN "
            "(SELECT id FROM tasks WHERE depends_on IS NOT NULL)"
        ).fetchall()
        doomed_rows = conn.execute("SELECT status, error FROM tasks WHERE id = ANY(%s)", (doomed,)).fetchall()
        counters = conn.execute("SELECT sum(in_progress), sum(queued), sum(ready) FROM queue_users").fetchone()
        per_user = dict(conn.execute("SELECT user_id, max_n FROM test_user_in_progress").fetchall())
        statuses = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
        attempts = conn.execute("SELECT DISTINCT attempts FROM tasks").fetchall()
        by_worker = Counter(row[0] for row in conn.execute("SELECT worker_id FROM tasks WHERE worker_id IS NOT NULL"))
    # Exactly once: one claim per task, every task Complete after one attempt; the doomed never claimed.
    assert len(claims) == TASKS and len({row[0] for row in claims}) == TASKS
    assert statuses == {TaskStatus.COMPLETE: TASKS, TaskStatus.FAILED: len(doomed)}
    assert sorted(attempts) == [(0,), (1,)]
    # No task claimed before the task it waits for completed.
    assert early == []
    assert all(status == TaskStatus.FAILED and "no-such-task" in error for status, error in doomed_rows)
    # The per-user counters the claim reads agree with the rows at the end: nothing left.
    assert counters == (0, 0, 0)
    # The limit held at every commit (the CHECK would have failed a claimer) and in every sample...
    assert max(per_user.values()) <= LIMIT and sampled_max[0] <= LIMIT
    # ...and it was binding, so the test exercised it; and the work was shared.
    assert sum(1 for n in per_user.values() if n == LIMIT) >= USERS // 2
    assert samples[0] > 0 and len(by_worker) == CLAIMERS
    setup.close()
