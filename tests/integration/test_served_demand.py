"""Demand counts only the task types the fleet's workers claim (`worker.task_types`).

The store's `demand_snapshot(task_types=...)` over both stores, then on real parts: a fleet that
serves one type completes its tasks and goes back to zero workers while tasks of another type stay
queued (without the filter they would keep a worker alive for work it can never claim).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray

from actors import remote
from config.settings import OrchestratorSettings
from fleet.models import WorkerState
from store.base import NewTask, TaskStatus
from store.postgres import PostgresStore
from store.rpc import RpcStore
from tests.support.fleet_harness import explain_fleet, fast_settings, fleet_cleanup, unique_name
from tests.support.polling import wait_for


def test_demand_snapshot_counts_only_the_served_types(store: RpcStore) -> None:
    store.configure_queue(per_user_limit=2, max_task_attempts=3)
    store.insert_tasks(
        [NewTask(task_type="gpu_render", user_id="u1", id=f"r{i}") for i in range(3)]
        + [NewTask(task_type="cpu_only", user_id="u3", id=f"x{i}") for i in range(3)]
        + [NewTask(task_type="cpu_only", user_id="u1", id="c-u1")]
        + [NewTask(task_type="gpu_render", user_id="u2", id="r-dep", depends_on="r0")]
    )
    everything = store.demand_snapshot()
    assert (everything.queued, everything.claimable, everything.in_progress) == (8, 4, 0)  # u1 2, u3 2
    assert dict(everything.breakdown) == {}

    served = store.demand_snapshot(task_types=["gpu_render"])
    assert (served.queued, served.claimable, served.in_progress) == (4, 2, 0)  # u1 capped at 2; r-dep waits
    assert dict(served.breakdown) == {"queued_other_types": 4}
    assert store.demand_snapshot(task_types=["nothing_like_it"]).claimable == 0
    assert store.demand_snapshot(task_types=[]).claimable == 4  # empty: every type

    # The per-user limit counts every In Progress task of the user, served type or not (as the
    # claim does); in_progress counts the served ones only.
    store.create_worker("w", reason="test")
    store.transition_worker("w", WorkerState.SPAWNING, WorkerState.ACTIVE, "test")
    claimed = store.claim_next_task("w", ["cpu_only"])
    assert claimed is not None and claimed.id == "c-u1"  # u1's: oldest first, then by id
    served = store.demand_snapshot(task_types=["gpu_render"])
    assert (served.claimable, served.in_progress) == (1, 0)
    assert store.complete_task(claimed.id, "w")
    assert store.claim_next_task("w", ["gpu_render"]) is not None
    served = store.demand_snapshot(task_types=["gpu_render"])
    assert (served.queued, served.claimable, served.in_progress) == (3, 1, 1)


def _served(settings: OrchestratorSettings, types: list[str]) -> OrchestratorSettings:
    return settings.model_copy(update={"worker": settings.worker.model_copy(update={"task_types": types})})


@pytest.mark.ray
def test_a_fleet_spawns_only_for_the_types_it_serves(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    settings = _served(fast_settings(database_url, tmp_path, max_workers=2), ["travel_segment"])
    scaler_name = unique_name("scaler-types")
    store = PostgresStore(database_url, min_size=1, max_size=2)
    with fleet_cleanup(settings, [scaler_name]):
        unserved = store.insert_tasks(
            [NewTask(task_type="cpu_only", user_id=f"other-{i}", params={"duration_s": 0.1}) for i in range(5)]
        )
        served = store.insert_tasks(
            [NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": 0.3}) for _ in range(3)]
        )
        scaler = remote.get_or_create_scaler(settings, name=scaler_name, probe_log_shipper=False)

        def explain() -> str:
            return f"{explain_fleet(store)}\nscaler: {ray.get(scaler.status.remote(), timeout=10)}"

        wait_for(
            lambda: all((t := store.get_task(i)) is not None and t.status == TaskStatus.COMPLETE for i in served),
            120,
            "the served tasks complete",
            explain=explain,
        )
        wait_for(
            lambda: store.list_workers() == [], 90, "fleet back to zero with unserved work queued", explain=explain
        )
        assert all((t := store.get_task(i)) is not None and t.status == TaskStatus.QUEUED for i in unserved)
        decisions = store.list_decisions()
        assert decisions and all(d.inputs.get("queued_other_types") == 5 for d in decisions), explain()
        assert max(d.inputs["claimable"] for d in decisions) <= 2  # u1's limit of 2, never the 5 others
    store.close()
