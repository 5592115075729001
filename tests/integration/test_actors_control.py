"""`orchestrator up`, `status` and `down` through their functions, on the session's real Ray.

`up` twice changes nothing; `down` keeps pods and the next `up` adopts them; `down --terminate-pods`
leaves no pod; `status` works from the database alone when Ray is unreachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors import names
from cloud.local import LocalProvider
from fleet.models import WorkerState
from orchestrator import app, control
from store.base import NewTask, TaskStatus
from store.postgres import PostgresStore
from tests.support.fleet_harness import actor_pid, explain_fleet, fast_settings, fleet_cleanup
from tests.support.polling import wait_for

pytestmark = pytest.mark.ray


def test_up_twice_status_down_keeps_pods_up_adopts_down_terminates(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    settings = fast_settings(database_url, tmp_path, idle_timeout_s=120)
    store = PostgresStore(database_url, min_size=1, max_size=2)
    provider = LocalProvider(tmp_path)
    with fleet_cleanup(settings, [names.SCALER_NAME, names.LOG_SHIPPER_NAME]):
        first = app.up(settings)
        assert first.actors[names.SCALER_NAME] == "created"
        pid = actor_pid(names.SCALER_NAME)
        second = app.up(settings)
        assert set(second.actors.values()) == {"re-attached"}
        assert actor_pid(names.SCALER_NAME) == pid, "a second `up` changes nothing"

        (task_id,) = store.insert_tasks([NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": 6})])
        worker = wait_for(
            lambda: [w for w in store.list_workers() if w.status is WorkerState.ACTIVE and w.tasks_in_progress],
            90,
            "an active worker holding the task",
            explain=lambda: explain_fleet(store),
        )[0]
        data = control.collect_status(settings)
        assert data["leader"]["epoch"] >= 1 and data["leader"]["valid"]
        assert data["ray"]["scaler"]["role"] == "leader"
        row = next(w for w in data["workers"] if w["id"] == worker.id)
        assert row["state"] == "active" and row["current_tasks"] == [task_id] and row["pod"] == worker.pod_id
        actor_names = {a["name"]: a for a in data["ray"]["actors"]}
        assert actor_names[names.SCALER_NAME]["restarts"] == 0
        assert f"worker:{worker.id}" in actor_names
        assert "Scaler(" in actor_names[names.SCALER_NAME]["repr"]
        control.render_status(data)
        assert actor_pid(names.STORE_GATEWAY_NAME) is not None, "the lifecycle's store calls go through it"

        # down: actors stop (the store gateway too), the pod keeps running (and its task with it).
        control.stop_fleet(settings, terminate_pods=False, timeout_s=30)
        assert actor_pid(names.SCALER_NAME) is None and actor_pid(f"worker:{worker.id}") is None
        wait_for(lambda: actor_pid(names.STORE_GATEWAY_NAME) is None, 10, "down leaves no store gateway behind")
        assert [p.name for p in provider.list("gpu-")] == [worker.id]

        # up again: the live row gets its lifecycle back; the task finishes on the same pod.
        app.up(settings)
        wait_for(lambda: actor_pid(f"worker:{worker.id}"), 30, "the next up re-creates the lifecycle")
        wait_for(
            lambda: (t := store.get_task(task_id)) is not None and t.status == TaskStatus.COMPLETE,
            60,
            "the task completes on the adopted pod",
        )
        task = store.get_task(task_id)
        assert task is not None and task.worker_id == worker.id and task.attempts == 1

        result = control.stop_fleet(settings, terminate_pods=True, timeout_s=60)
        assert result["pods_left"] == []
        assert store.list_workers() == [], explain_fleet(store)
        assert provider.list("gpu-") == []
    store.close()


def test_status_with_ray_unreachable_reads_the_database(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fast_settings(database_url, tmp_path)

    def no_ray(*_args: Any, **_kwargs: Any) -> None:
        raise ConnectionError("no Ray cluster at 127.0.0.1:6379")

    monkeypatch.setattr(app, "connect_ray", no_ray)
    data = control.collect_status(settings)
    assert data["ray"] == {"reachable": False, "error": "ConnectionError: no Ray cluster at 127.0.0.1:6379"}
    assert data["leader"] is None and data["workers"] == []
    control.render_status(data)
