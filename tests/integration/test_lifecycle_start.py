"""A WorkerLifecycle whose database is unreachable when it starts keeps its pod supervised.

Ray never restarts an actor whose constructor raised, so a lifecycle that opened its store in
`__init__` and met a slow database would leave its pod without an owner for good. The store is
opened inside the loop instead; this drives the plain class (no Ray) through such a start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actors.lifecycle import WorkerLifecycle
from cloud.local import LocalProvider
from store.base import DatabaseUnavailable, Store
from store.postgres import PostgresStore
from tests.support.fleet_harness import fast_settings
from tests.support.polling import wait_for

WORKER_ID = "gpu-20260101_000000-0badcafe"


def test_lifecycle_survives_a_database_that_is_down_when_it_starts(database_url: str, tmp_path: Path) -> None:
    settings = fast_settings(database_url, tmp_path)
    observer = PostgresStore(database_url, min_size=1, max_size=2)
    observer.create_worker(WORKER_ID, reason="scale_up: test")
    opened: list[Store] = []
    refusals: list[int] = []

    def store_down_twice(_: Any) -> Store:
        if len(refusals) < 2:
            refusals.append(1)
            raise DatabaseUnavailable("postgres at db.example:5432 unreachable (test)")
        store = PostgresStore(database_url, min_size=1, max_size=2)
        opened.append(store)
        return store

    lifecycle = WorkerLifecycle(
        WORKER_ID, settings, store_factory=store_down_twice, exit_hook=lambda: None
    )  # must not raise
    try:
        row = wait_for(
            lambda: (r := observer.get_worker(WORKER_ID)) is not None and r.pod_id is not None and r,
            60,
            "the lifecycle to create the pod once the database answers",
        )
        assert row.pod_id is not None
        assert len(refusals) == 2
        assert "DatabaseUnavailable" in (lifecycle.status()["last_error"] or "")
        lifecycle.request_terminate("test over")
        wait_for(lambda: lifecycle.status()["finished"], 60, "the lifecycle to terminate its pod")
        final = observer.get_worker(WORKER_ID)
        assert final is not None and final.status.value == "terminated"
    finally:
        lifecycle.stop()
        provider = LocalProvider(tmp_path)
        for pod in provider.list("gpu-"):
            provider.terminate(pod.id)
        observer.close()
