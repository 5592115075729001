"""The queue at scale (issue 13): the claim by per-user counters takes the oldest eligible task, the
per-user counters stay exact, dependencies that can never complete fail their tasks, heartbeats
never wait for a claim, and retention deletes only what is older than its window, in batches,
while claims go on."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fleet.models import WorkerState
from store.base import NewTask, RetentionTarget, TaskStatus
from store.postgres import PostgresStore
from store.rpc import RpcStore

LIMIT = 2

# The oldest Queued task a claim may take, read from the rows by the rule itself (not by the
# counters the claim reads): not waiting for an unfinished task, of a user below the limit.
_ELIGIBLE_SQL = """
SELECT t.id FROM tasks t
WHERE t.status = 'Queued'
  AND (t.depends_on IS NULL OR EXISTS (SELECT 1 FROM tasks d WHERE d.id = t.depends_on AND d.status = 'Complete'))
  AND (SELECT count(*) FROM tasks p WHERE p.user_id = t.user_id AND p.status = 'In Progress') < %s
  AND (%s::text[] IS NULL OR t.task_type = ANY (%s::text[]))
ORDER BY t.created_at, t.id LIMIT 1
"""

# queue_users recomputed from the rows, to compare with the row the triggers keep.
_COUNTERS_SQL = """
SELECT t.user_id,
       count(*) FILTER (WHERE t.status = 'In Progress'),
       count(*) FILTER (WHERE t.status = 'Queued'),
       count(*) FILTER (WHERE t.status = 'Queued' AND NOT t.blocked),
       (SELECT h.id FROM tasks h WHERE h.user_id = t.user_id AND h.status = 'Queued' AND NOT h.blocked
        ORDER BY h.created_at, h.id LIMIT 1)
FROM tasks t WHERE t.status IN ('Queued', 'In Progress') GROUP BY t.user_id ORDER BY 1
"""


def _active(store: PostgresStore, worker_id: str) -> str:
    store.create_worker(worker_id, reason="test")
    store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "test")
    return worker_id


def _counters(conn: psycopg.Connection[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    expected = conn.execute(_COUNTERS_SQL).fetchall()
    kept = conn.execute(
        "SELECT user_id, in_progress, queued, ready, head_id FROM queue_users "
        "WHERE in_progress > 0 OR queued > 0 ORDER BY 1"
    ).fetchall()
    return expected, kept


def test_each_claim_takes_the_oldest_eligible_task(pg_store: PostgresStore, database_url: str) -> None:
    """Users at their limit, tasks waiting for unfinished ones and tasks of another type come
    first in the queue; each claim (with and without task types) is the rule's oldest eligible."""
    pg_store.configure_queue(per_user_limit=LIMIT, max_task_attempts=3)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    tasks = []
    for i in range(120):
        user = f"busy{i % 3}" if i < 40 else f"u{i % 7}"
        waits = f"t{i - 11:03d}" if i % 9 == 4 and i >= 11 else None
        kind = "cpu" if i % 13 == 0 else "gpu"
        tasks.append(
            NewTask(
                task_type=kind, user_id=user, id=f"t{i:03d}", created_at=base + timedelta(seconds=i), depends_on=waits
            )
        )
    pg_store.insert_tasks(tasks)
    holder = _active(pg_store, "holder")
    worker = _active(pg_store, "w")
    with psycopg.connect(database_url, autocommit=True) as conn:
        # the three busy users reach their limit through real claims, and keep it
        for user in ("busy0", "busy1", "busy2"):
            for _ in range(LIMIT):
                row = conn.execute(
                    "SELECT id FROM tasks WHERE user_id = %s AND status = 'Queued' AND NOT blocked "
                    "ORDER BY created_at, id LIMIT 1",
                    (user,),
                ).fetchone()
                assert row is not None
                conn.execute("UPDATE tasks SET status = 'In Progress', worker_id = %s WHERE id = %s", (holder, row[0]))
        taken = 0
        for n in range(60):
            types = ["gpu"] if n % 3 == 2 else None
            expected = conn.execute(_ELIGIBLE_SQL, (LIMIT, types, types)).fetchone()
            task = pg_store.claim_next_task(worker, types)
            assert (task.id if task else None) == (expected[0] if expected else None), n
            if task is None:
                break
            taken += 1
            assert not task.user_id.startswith("busy")
            # finish most (their waiting tasks become eligible), keep some in progress (limits bind)
            if n % 4 != 3:
                assert pg_store.complete_task(task.id, worker)
            expected_counters, kept = _counters(conn)
            assert kept == expected_counters, n
        assert taken >= 40


def test_dependencies_that_can_never_complete_fail_in_cascade(pg_store: PostgresStore, database_url: str) -> None:
    pg_store.configure_queue(per_user_limit=3, max_task_attempts=1)
    worker = _active(pg_store, "w")
    pg_store.insert_tasks([NewTask(task_type="t", user_id="a", id="root")])
    pg_store.insert_tasks(
        [
            NewTask(task_type="t", user_id="b", id="child", depends_on="root"),
            NewTask(task_type="t", user_id="c", id="grandchild", depends_on="child"),
            NewTask(task_type="t", user_id="c", id="cancelled-dep", depends_on="to-cancel"),
            NewTask(task_type="t", user_id="d", id="to-cancel"),
        ]
    )
    snapshot = pg_store.demand_snapshot()
    # waiting tasks are queued, never claimable: root and to-cancel only
    assert (snapshot.queued, snapshot.claimable) == (5, 2)
    claimed = pg_store.claim_next_task(worker)
    assert claimed is not None and claimed.id == "root"
    assert pg_store.fail_task("root", worker, "out of memory") == TaskStatus.FAILED  # one attempt allowed
    child, grandchild = pg_store.get_task("child"), pg_store.get_task("grandchild")
    assert child is not None and child.status == TaskStatus.FAILED
    assert child.error == "depends on task root, which is Failed: it can never run"
    assert grandchild is not None and grandchild.status == TaskStatus.FAILED
    assert grandchild.error == "depends on task child, which is Failed: it can never run"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET status = 'Cancelled', finished_at = now() WHERE id = 'to-cancel'")
    cancelled = pg_store.get_task("cancelled-dep")
    assert cancelled is not None and cancelled.status == TaskStatus.FAILED
    assert cancelled.error is not None and "to-cancel, which is Cancelled" in cancelled.error
    snapshot = pg_store.demand_snapshot()
    assert (snapshot.queued, snapshot.claimable, snapshot.in_progress) == (0, 0, 0)
    assert pg_store.claim_next_task(worker) is None


def test_a_completed_dependency_makes_its_tasks_claimable(pg_store: PostgresStore) -> None:
    worker = _active(pg_store, "w")
    pg_store.insert_tasks([NewTask(task_type="t", user_id="a", id="first")])
    pg_store.insert_tasks([NewTask(task_type="t", user_id="b", id="then", depends_on="first")])
    assert pg_store.demand_snapshot().claimable == 1
    first = pg_store.claim_next_task(worker)
    assert first is not None and first.id == "first"
    assert pg_store.claim_next_task(worker) is None  # `then` waits
    assert pg_store.complete_task("first", worker)
    assert pg_store.demand_snapshot().claimable == 1
    then = pg_store.claim_next_task(worker)
    assert then is not None and then.id == "then"
    # the worker's idle-since is kept on its row: set when its last task left In Progress
    assert pg_store.complete_task("then", worker)
    row, done = pg_store.get_worker(worker), pg_store.get_task("then")
    assert row is not None and done is not None and row.idle_since == done.finished_at


def test_a_heartbeat_never_waits_for_a_claim(pg_store: PostgresStore, database_url: str) -> None:
    """A claim still in its transaction holds its lock on the worker row: a heartbeat goes through
    at once, while a transition (to draining) waits for the claim (the order that matters)."""
    worker = _active(pg_store, "w")
    pg_store.insert_tasks([NewTask(task_type="t", user_id="u")])
    with psycopg.connect(database_url) as claiming, psycopg.connect(database_url, autocommit=True) as other:
        task = claiming.execute("SELECT claim_next_task('w')").fetchone()
        assert task is not None and task[0] is not None  # the claim's transaction is still open
        other.execute("SET lock_timeout = '2s'")
        status = other.execute("SELECT worker_heartbeat('w', '{\"gpu\": 1}')").fetchone()
        assert status == ("active",)  # no lock wait: it would have failed after lock_timeout
        other.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            other.execute("SELECT transition_worker('w', 'active', 'draining', 'test')")
        claiming.commit()
    assert pg_store.transition_worker(worker, WorkerState.ACTIVE, WorkerState.DRAINING, "test")
    assert pg_store.claim_next_task(worker) is None  # draining: no new claim


def test_retention_deletes_only_what_is_older_in_batches_while_claims_run(
    pg_store: PostgresStore, database_url: str
) -> None:
    old, keep_s = 3 * 86_400.0, 86_400.0
    with psycopg.connect(database_url, autocommit=True) as conn:
        # 25 old and 5 recent rows of each target, written in the past by hand
        conn.execute(
            """INSERT INTO system_logs (id, at, level, source_type, source_id, message)
               SELECT 'log' || g, now() - make_interval(secs => CASE WHEN g < 25 THEN %s ELSE 60 END),
                      'INFO', 'orchestrator', 'scaler', 'm'
               FROM generate_series(0, 29) g""",
            (old,),
        )
        conn.execute(
            """INSERT INTO workers (id, status, terminated_at)
               SELECT 'dead' || g, 'terminated', now() - make_interval(secs => CASE WHEN g < 25 THEN %s ELSE 60 END)
               FROM generate_series(0, 29) g""",
            (old,),
        )
        conn.execute(
            """INSERT INTO worker_events (worker_id, at, to_status, reason)
               SELECT 'dead' || g, now() - make_interval(secs => CASE WHEN g < 25 THEN %s ELSE 60 END),
                      'terminated', 't'
               FROM generate_series(0, 29) g""",
            (old,),
        )
        conn.execute(
            """INSERT INTO tasks (id, task_type, user_id, status, finished_at)
               SELECT 'done' || g, 't', 'old', 'Complete',
                      now() - make_interval(secs => CASE WHEN g < 25 THEN %s ELSE 60 END)
               FROM generate_series(0, 29) g""",
            (old,),
        )
    worker = _active(pg_store, "claimer")
    pg_store.insert_tasks([NewTask(task_type="t", user_id=f"u{i % 5}") for i in range(60)])
    stop, first_claim = threading.Event(), threading.Event()
    claimed: list[str] = []
    errors: list[BaseException] = []

    def claim() -> None:
        store = PostgresStore(database_url, max_size=1)
        try:
            while not stop.is_set():
                task = store.claim_next_task(worker)
                if task is None:
                    return
                claimed.append(task.id)
                first_claim.set()
                assert store.complete_task(task.id, worker)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    thread = threading.Thread(target=claim)
    thread.start()
    assert first_claim.wait(30), errors  # retention runs while the claims go on
    batches: dict[RetentionTarget, list[int]] = {}
    for target in RetentionTarget:
        while True:
            n = pg_store.apply_retention(target, keep_s, batch=10)
            batches.setdefault(target, []).append(n)
            if n < 10:
                break
    stop.set()
    thread.join(timeout=60)
    assert not errors, errors
    # 25 old rows each, 10 at most per batch: 10, 10, 5
    assert batches == {target: [10, 10, 5] for target in RetentionTarget}
    with psycopg.connect(database_url, autocommit=True) as conn:
        left = {
            "system_logs": conn.execute("SELECT count(*) FROM system_logs WHERE id LIKE 'log%'").fetchone(),
            "workers": conn.execute("SELECT count(*) FROM workers WHERE id LIKE 'dead%'").fetchone(),
            "worker_events": conn.execute("SELECT count(*) FROM worker_events WHERE worker_id LIKE 'dead%'").fetchone(),
            "tasks": conn.execute("SELECT count(*) FROM tasks WHERE id LIKE 'done%'").fetchone(),
        }
        claimed_rows = conn.execute(
            "SELECT count(*) FROM tasks WHERE status = 'Complete' AND id = ANY(%s)", (claimed,)
        ).fetchone()
    assert left == dict.fromkeys(left, (5,))  # the recent ones stay
    assert claimed and claimed_rows == (len(claimed),)  # the claims went on; retention took none of them
    windows = {w.target: w for w in pg_store.retention_windows()}
    assert set(windows) == {t.value for t in RetentionTarget}
    now = pg_store.now()
    for window in windows.values():
        assert window.keep_s == keep_s and window.deleted == 25
        assert abs((now - window.cutoff).total_seconds() - keep_s) < 60


def test_retention_refuses_bad_input_naming_it(pg_store: PostgresStore) -> None:
    with pytest.raises(Exception, match="retention target bogus"):
        pg_store.apply_retention("bogus", 10.0)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="keep_s must be positive"):
        pg_store.apply_retention(RetentionTarget.SYSTEM_LOGS, 0.0)


def test_explain_says_where_the_retained_window_starts(pg_store: PostgresStore, database_url: str) -> None:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    env = {"DATABASE_URL": database_url, "ORCHESTRATOR_DATABASE__BACKEND": "postgres"}
    before = (pg_store.now() - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = CliRunner().invoke(app, ["explain", "--since", before], env=env)
    assert result.exit_code == 0, result.output
    assert "retained: everything so far (retention has not run on this database)" in result.output
    pg_store.apply_retention(RetentionTarget.WORKER_EVENTS, 86_400.0)
    cutoff = pg_store.retention_windows()[0].cutoff
    result = CliRunner().invoke(app, ["explain", "--since", before], env=env)
    assert result.exit_code == 0, result.output
    assert f"retained: worker_events since {cutoff:%Y-%m-%d %H:%M} UTC" in result.output
    assert "is before the retained window of worker_events: what happened then has been deleted" in result.output
    result = CliRunner().invoke(app, ["explain", "--since", before, "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert '"target": "worker_events"' in result.output


class _NoLifecycles:
    """No worker is ever spawned here (max_workers 0): the Scaler's lifecycle directory stays empty."""

    def __len__(self) -> int:
        return 0

    def ensure(self, worker_id: str) -> None: ...

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None: ...

    def keep_only(self, worker_ids: set[str]) -> None: ...


def test_the_scaler_debounces_wakeups_lists_pods_on_its_cadence_and_applies_retention(
    database_url: str, tmp_path: Path
) -> None:
    from actors.scaler import Scaler
    from tests.support.fleet_harness import fast_settings, unique_name
    from tests.support.polling import wait_for

    settings = fast_settings(
        database_url,
        tmp_path,
        max_workers=0,
        cycle_interval_s=30.0,
        wake_debounce_s=1.0,
        provider_list_interval_s=600.0,
        lease_ttl_s=60.0,
    )
    settings = settings.model_copy(
        update={
            "retention": settings.retention.model_copy(
                update={"system_logs_s": 3600.0, "batch_size": 10, "max_batches": 2, "interval_s": 1.0}
            )
        }
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO system_logs (id, at, level, source_type, source_id, message)
               SELECT 'old' || g, now() - interval '2 hours', 'INFO', 'worker', 'w', 'm'
               FROM generate_series(0, 49) g"""
        )
    scaler = Scaler(settings, holder="test/debounce", name=unique_name("scaler-debounce"), lifecycles=_NoLifecycles())
    store = PostgresStore(database_url, max_size=1)
    try:
        wait_for(lambda: scaler.status()["role"] == "leader", 20, "the Scaler leads")
        # retention ran in the first cycle: two batches of 10 of the 50 old rows, the rest next runs
        wait_for(lambda: store.retention_windows(), 20, "a retention run on record")
        start_wakeups, start_lists = scaler._wakeups, scaler._provider_lists
        started = time.monotonic()
        for i in range(100):  # a stream of claimable tasks, each notifying
            store.insert_tasks([NewTask(task_type="t", user_id=f"u{i % 5}")])
            time.sleep(0.02)
        wait_for(lambda: scaler._wakeups > start_wakeups, 20, "a wake-up by the notifications")
        elapsed = time.monotonic() - started
        # at most one event-driven cycle per debounce (1 s), whatever the rate of notifications
        assert scaler._wakeups - start_wakeups <= elapsed / 1.0 + 2
        # and the provider is not listed per wake-up (its cadence is 600 s; timed cycles are 30 s apart)
        assert scaler._provider_lists - start_lists <= 1
        with psycopg.connect(database_url, autocommit=True) as conn:
            wait_for(
                lambda: conn.execute("SELECT count(*) FROM system_logs WHERE id LIKE 'old%'").fetchone() == (0,),
                20,
                "every old log row deleted over a few runs",
            )
    finally:
        scaler.stop("test over")
        store.close()


def test_retention_through_either_store(store: RpcStore) -> None:
    """The Supabase REST store and the direct one run the same SQL function."""
    assert store.retention_windows() == []
    assert store.apply_retention(RetentionTarget.SYSTEM_LOGS, 3600.0, batch=5) == 0
    (window,) = store.retention_windows()
    assert (window.target, window.keep_s, window.deleted) == ("system_logs", 3600.0, 0)


def test_a_stale_head_is_moved_on_by_the_claim(pg_store: PostgresStore, database_url: str) -> None:
    """A write that bypassed the triggers (replica mode) leaves a head that is not ready: the claim
    moves the user's head on instead of skipping the user for ever."""
    worker = _active(pg_store, "w")
    pg_store.insert_tasks([NewTask(task_type="t", user_id="u", id=f"t{i}") for i in range(3)])
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # triggers off for this session
        conn.execute("UPDATE tasks SET status = 'Cancelled' WHERE id = 't0'")
    task = pg_store.claim_next_task(worker)
    assert task is not None and task.id == "t1"
