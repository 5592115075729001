"""The `reigh` queue profile against a real Reigh-shaped app database, over both stores.

The app's schema (public) is never changed by `orchestrator migrate`; demand comes from the app's
own functions; every lifecycle row has an app row written the way the contract says; a lost
worker's tasks go back with the app's semantics; the orchestrator's logs reach the app's
system_logs too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from fleet.models import WorkerState
from store.base import LogRecord, Store
from store.migrate import ProfileMismatch, apply_migrations, load_migrations
from store.postgres import PostgresStore
from store.reigh import fixture
from tests.support.catalogue import catalogue


def _fresh(pg_server_url: str) -> str:
    name = f"e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0'.encode())
    return psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)


def test_migrate_leaves_the_apps_schema_exactly_as_it_was(pg_server_url: str) -> None:
    url = _fresh(pg_server_url)
    fixture.apply_app_fixture(url)
    before = catalogue(url, "public")
    assert before["functions"] and before["relations"]  # a real app schema, not an empty one
    names = [m.name for m in load_migrations("reigh")]
    assert apply_migrations(url, profile="reigh") == names
    assert catalogue(url, "public") == before
    assert apply_migrations(url, profile="reigh") == []  # twice: a no-op
    assert catalogue(url, "public") == before
    assert not any(name.startswith("native/") for name in names)


def test_a_database_keeps_its_profile(pg_server_url: str, reigh_database_url: str, database_url: str) -> None:
    with pytest.raises(ProfileMismatch, match="'reigh'"):
        apply_migrations(reigh_database_url, profile="native")
    with pytest.raises(ProfileMismatch, match="'native'"):
        apply_migrations(database_url, profile="reigh")


def test_reigh_without_the_app_schema_names_what_is_missing(pg_server_url: str) -> None:
    url = _fresh(pg_server_url)
    with pytest.raises(psycopg.errors.UndefinedTable, match=r"no Reigh app schema \(missing public.tasks"):
        apply_migrations(url, profile="reigh")


@pytest.fixture
def app(reigh_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(reigh_database_url, autocommit=True) as conn:
        yield conn


def _user_with_tasks(
    app: psycopg.Connection[Any],
    n: int,
    *,
    credits: int = 10,
    in_cloud: bool | None = None,
    task_type: str = "travel_segment",
) -> list[uuid.UUID]:
    user = fixture.add_user(app, credits=credits, in_cloud=in_cloud)
    project = fixture.add_project(app, user)
    return [fixture.add_task(app, project_id=project, task_type=task_type, params={"i": i}) for i in range(n)]


def test_demand_is_the_apps_own_count_with_its_breakdown(reigh_store: Store, app: psycopg.Connection[Any]) -> None:
    fixture.add_task_type(app, "travel_segment", "gpu")
    fixture.add_task_type(app, "openai_call", "api")
    _user_with_tasks(app, 7)  # the app's per-user limit is 5
    _user_with_tasks(app, 2, credits=0)  # no credits: never eligible
    _user_with_tasks(app, 2, in_cloud=False)  # opted out of cloud runs
    _user_with_tasks(app, 3, task_type="openai_call")  # another run type
    user = fixture.add_user(app, credits=5, in_cloud=True)
    project = fixture.add_project(app, user)
    parent = fixture.add_task(app, project_id=project, task_type="travel_segment", params={})
    fixture.add_task(app, project_id=project, task_type="travel_segment", params={}, dependant_on=[parent])

    snapshot = reigh_store.demand_snapshot()
    expected = app.execute("SELECT public.count_eligible_tasks_service_role(false, 'gpu')").fetchone()
    assert expected is not None and snapshot.claimable == expected[0] == 5 + 1
    breakdown = dict(snapshot.breakdown)
    row = app.execute(
        "SELECT claimable_now, blocked_by_capacity, blocked_by_deps, blocked_by_settings, total_queued "
        "FROM public.count_queued_tasks_breakdown_service_role('gpu')"
    ).fetchone()
    assert row is not None
    assert (breakdown["blocked_by_capacity"], breakdown["blocked_by_deps"], breakdown["blocked_by_settings"]) == row[
        1:4
    ]
    assert snapshot.queued == row[4]
    assert breakdown["blocked_by_capacity"] == 2 and breakdown["blocked_by_deps"] == 1
    assert breakdown["blocked_by_settings"] == 4
    assert snapshot.in_progress == 0

    reigh_store.configure_reigh("api", True)
    assert reigh_store.demand_snapshot().claimable == 3


def _beat(app: psycopg.Connection[Any], worker_id: str, status: str = "active") -> None:
    app.execute(
        "SELECT public.func_worker_heartbeat_with_logs(worker_id_param => %s, status_param => %s)", (worker_id, status)
    )


def _app_worker(app: psycopg.Connection[Any], worker_id: str) -> tuple[Any, ...]:
    row = app.execute(
        "SELECT instance_type, status, metadata FROM public.workers WHERE id = %s", (worker_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_lifecycle_row_is_mirrored_into_the_apps_workers(reigh_store: Store, app: psycopg.Connection[Any]) -> None:
    wid = "gpu-20261201_120000-0a1b2c3d"
    row = reigh_store.create_worker(wid, reason="spawn: test", gpu_type=None)
    assert row.status is WorkerState.SPAWNING and row.last_heartbeat_at is None
    instance_type, status, meta = _app_worker(app, wid)
    assert (instance_type, status, meta["orchestrator_status"]) == ("pending", "inactive", "spawning")

    reigh_store.set_worker_pod(wid, "pod-123", gpu_type="NVIDIA GeForce RTX 4090", metadata={"ram_tier_gb": 72})
    instance_type, status, meta = _app_worker(app, wid)
    assert instance_type == "NVIDIA GeForce RTX 4090" and meta["runpod_id"] == "pod-123" and meta["ram_tier"] == 72

    _beat(app, wid)  # the Headless-Wan2GP worker's heartbeat
    seen = reigh_store.get_worker(wid)
    assert seen is not None and seen.last_heartbeat_at is not None and seen.reported_status == "active"

    assert reigh_store.transition_worker(wid, WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: test")
    _, status, meta = _app_worker(app, wid)
    assert status == "active" and meta["orchestrator_status"] == "active" and meta["promoted_to_active_at"]

    _beat(app, wid, "crashed")
    seen = reigh_store.get_worker(wid)
    assert seen is not None and seen.reported_status == "crashed"
    assert reigh_store.transition_worker(wid, WorkerState.ACTIVE, WorkerState.ERROR, "worker_crashed: test")
    assert _app_worker(app, wid)[1] == "crashed"  # the worker's own report stays until the pod is gone
    assert reigh_store.transition_worker(wid, WorkerState.ERROR, WorkerState.TERMINATING, "error_cleanup: test")
    assert reigh_store.transition_worker(wid, WorkerState.TERMINATING, WorkerState.TERMINATED, "terminated: test")
    _, status, meta = _app_worker(app, wid)
    assert status == "terminated" and meta["orchestrator_status"] == "terminated" and meta["terminated_at"]
    assert meta["error_reason"] == "worker_crashed: test"


def test_a_lost_workers_tasks_go_back_the_apps_way(reigh_store: Store, app: psycopg.Connection[Any]) -> None:
    fixture.add_task_type(app, "travel_segment", "gpu")
    first, second = _user_with_tasks(app, 2)
    wid = "gpu-20261201_120001-0a1b2c3d"
    reigh_store.create_worker(wid, reason="spawn: test")
    _beat(app, wid)
    claimed = app.execute(
        "SELECT task_id FROM public.claim_next_task_service_role(%s, false, 'gpu')", (wid,)
    ).fetchall()
    claimed += app.execute(
        "SELECT task_id FROM public.claim_next_task_service_role(%s, false, 'gpu')", (wid,)
    ).fetchall()
    assert {r[0] for r in claimed} == {first, second}
    app.execute("UPDATE public.tasks SET attempts = 3 WHERE id = %s", (second,))

    seen = reigh_store.get_worker(wid)
    assert seen is not None and seen.tasks_in_progress == 2 and seen.idle_since is None
    started = app.execute("SELECT min(generation_started_at) FROM public.tasks WHERE worker_id = %s", (wid,))
    assert seen.task_started_at == started.fetchone()[0] and seen.task_type is not None
    assert reigh_store.requeue_worker_tasks(wid) == 2
    rows = dict(
        (r[0], r[1:])
        for r in app.execute(
            "SELECT id, status::text, attempts, worker_id, generation_started_at, error_message FROM public.tasks"
        )
    )
    assert rows[first] == ("Queued", 1, None, None, None)
    assert rows[second][0] == "Failed" and "was lost" in rows[second][4]

    task = reigh_store.get_task(str(first))
    assert task is not None and task.status == "Queued" and task.attempts == 1
    assert reigh_store.task_counts() == {"Queued": 1, "Failed": 1}
    assert [t.id for t in reigh_store.list_tasks("Failed")] == [str(second)]


def test_orchestrator_logs_also_reach_the_apps_system_logs(reigh_store: Store, app: psycopg.Connection[Any]) -> None:
    now = datetime.now(UTC)
    records = [
        LogRecord(
            id=f"log-{i}",
            at=now,
            level="INFO",
            source_type="orchestrator",
            source_id="scaler",
            message=f"cycle {i}",
            cycle_number=i,
            attributes={"k": i},
        )
        for i in range(3)
    ] + [LogRecord(id="w-1", at=now, level="INFO", source_type="worker", source_id="gpu-x", message="a worker line")]
    result = reigh_store.insert_system_logs(records)
    assert result.inserted == 4
    mirrored = app.execute(
        "SELECT source_type, source_id, log_level, message, cycle_number, metadata ->> 'log_id' "
        "FROM public.system_logs ORDER BY cycle_number"
    ).fetchall()
    assert mirrored == [("orchestrator_gpu", "scaler", "INFO", f"cycle {i}", i, f"log-{i}") for i in range(3)]
    again = reigh_store.insert_system_logs(records)  # a replay after a lost answer: nothing twice
    assert again.inserted == 0 and again.duplicates == 4
    count = app.execute("SELECT count(*) FROM public.system_logs").fetchone()
    assert count == (3,)

    reigh_store.configure_reigh("gpu", False)
    reigh_store.insert_system_logs([records[0].model_copy(update={"id": "log-off"})])
    assert app.execute("SELECT count(*) FROM public.system_logs").fetchone() == (3,)


def test_the_orchestrator_never_puts_tasks_into_the_apps_queue(reigh_store: Store) -> None:
    from store.base import NewTask, StoreError

    with pytest.raises(StoreError, match="tasks are put in by the app"):
        reigh_store.insert_tasks([NewTask(task_type="t", user_id="u")])


def test_a_new_task_wakes_the_scaler_without_a_trigger(reigh_database_url: str, app: psycopg.Connection[Any]) -> None:
    import threading
    import time

    fixture.add_task_type(app, "travel_segment", "gpu")
    store = PostgresStore(reigh_database_url, min_size=1, max_size=1, change_probe_s=0.05)
    try:
        assert store.wait_for_task_change(0.2) is False  # nothing new: waits its time out
        project = fixture.add_project(app, fixture.add_user(app, credits=1, in_cloud=True))
        timer = threading.Timer(
            0.3, lambda: fixture.add_task(app, project_id=project, task_type="travel_segment", params={})
        )
        timer.start()
        started = time.monotonic()
        assert store.wait_for_task_change(5.0) is True
        assert time.monotonic() - started < 2.0
        timer.join()
    finally:
        store.close()
