"""A poison task among normal work, on real parts: a real local Ray, a real Postgres, LocalProvider
pods running the reference worker.

The poison task's params say `exit_pod: true`: the demo handler ends its worker's process at once
(`os._exit`, as an out-of-memory kill would), so the pod exits with the task In Progress. Each such
loss counts against the task (its attempts), never against the fleet's breaker: after
max_task_attempts losses the task is Failed with the reason, while the 30 normal tasks of other
users complete and the breaker never leaves `closed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from actors import remote
from fleet.lifecycle import LOST_WITH_TASK
from store.base import NewTask, TaskRow, TaskStatus
from store.postgres import PostgresStore
from tests.support.fleet_harness import explain_fleet, fast_settings, fleet_cleanup, unique_name
from tests.support.polling import wait_for

pytestmark = pytest.mark.ray

MAX_ATTEMPTS = 3


def test_a_poison_task_fails_after_max_attempts_and_never_opens_the_breaker(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    # A breaker that opens early: two failures out of up to four spawns would open it.
    settings = fast_settings(
        database_url,
        tmp_path,
        max_workers=4,
        per_user_concurrency_limit=2,
        max_task_attempts=MAX_ATTEMPTS,
        min_attempts_for_breaker=2,
        failure_rate_threshold=0.5,
        heartbeat_timeout_s=15.0,  # a slow machine's late beat is no failure here; pod exits are seen at once
    )
    scaler_name = unique_name("scaler-poison")
    store = PostgresStore(database_url, min_size=1, max_size=2)
    with fleet_cleanup(settings, [scaler_name]):
        (poison,) = store.insert_tasks(
            [NewTask(task_type="travel_segment", user_id="poison-user", params={"exit_pod": True})]
        )
        normal = store.insert_tasks(
            [
                NewTask(task_type="travel_segment", user_id=f"user-{i % 3}", params={"duration_s": 0.3})
                for i in range(30)
            ]
        )
        scaler = remote.get_or_create_scaler(settings, name=scaler_name, probe_log_shipper=False)

        def explain() -> str:
            return f"{explain_fleet(store)}\nscaler: {ray.get(scaler.status.remote(), timeout=10)}"

        def poison_failed() -> TaskRow | None:
            task = store.get_task(poison)
            return task if task is not None and task.status == TaskStatus.FAILED else None

        failed = wait_for(
            poison_failed,
            240,
            "the poison task Failed",
            interval_s=0.3,
            explain=explain,
        )
        wait_for(
            lambda: all((t := store.get_task(i)) is not None and t.status == TaskStatus.COMPLETE for i in normal),
            240,
            "the 30 normal tasks complete",
            interval_s=0.3,
            explain=explain,
        )
        assert failed is not None and failed.attempts == MAX_ATTEMPTS
        assert failed.error is not None and "was lost while running it" in failed.error, failed.error
        assert f"{MAX_ATTEMPTS} attempts reached" in failed.error
        assert all(t.attempts == 1 for t in store.list_tasks() if t.id != poison), "no normal task was retried"

        # One lost pod per attempt, each recorded as a loss with a task, not as a fleet failure.
        lost = [
            e
            for w in store.list_workers(include_terminated=True)
            for e in store.list_worker_events(worker_id=w.id)
            if e.to_status == "error"
        ]
        assert [e.reason.split(":")[0] for e in lost] == [LOST_WITH_TASK] * MAX_ATTEMPTS, explain()

        # The breaker never moved: every decision and the Scaler's own view say closed, 0 failures.
        decisions = store.list_decisions()
        assert decisions
        assert {d.inputs.get("breaker") for d in decisions} == {"closed"}, explain()
        assert {d.inputs.get("failures_in_window") for d in decisions} == {0}, explain()
        status: Any = ray.get(scaler.status.remote(), timeout=10)
        assert status["breaker"]["status"] == "closed", status
    store.close()
