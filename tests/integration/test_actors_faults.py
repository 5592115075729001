"""The Scaler and WorkerLifecycle actors under faults, on a real local Ray, real Postgres and LocalProvider pods.

- the 17:55 situation (one active worker, demand for two) spawns exactly one, also when the Scaler
  is SIGKILLed right after persisting its decision;
- SIGKILL of the Scaler and of a WorkerLifecycle mid-spawn: both come back, no pod is made twice,
  none is left without an owner, the fleet converges;
- two orchestrators against one database: one acts, the standby takes over with a higher epoch;
- a worker that stops heartbeating is terminated and its task is done by another worker;
- a provider whose pods never start opens the breaker: spawns stop and status says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.util.state import list_actors

from actors import remote
from actors.scaler import Scaler
from cloud.local import LocalFaults, LocalProvider
from fleet.models import WorkerState
from orchestrator import control
from orchestrator.app import state_api_address
from store.base import DecisionRecord, NewTask, StaleEpoch, TaskStatus
from store.postgres import PostgresStore
from tests.support.fleet_harness import actor_pid, explain_fleet, fast_settings, fleet_cleanup, sigkill, unique_name
from tests.support.polling import stays_true, wait_for

pytestmark = pytest.mark.ray


@pytest.fixture
def store(database_url: str) -> Any:
    s = PostgresStore(database_url, min_size=1, max_size=2)
    yield s
    s.close()


def _restarts(name: str) -> int:
    rows = [
        a
        for a in list_actors(address=state_api_address(), filters=[("name", "=", name)], detail=True)
        if a.state != "DEAD"
    ]
    return max((int(a.num_restarts or 0) for a in rows), default=0)


def _live(store: PostgresStore, state: WorkerState | None = None) -> list[Any]:
    return [w for w in store.list_workers() if state is None or w.status is state]


@pytest.mark.parametrize("kill_after_decide", [False, True], ids=["plain", "scaler-sigkilled-after-deciding"])
def test_1755_one_active_worker_demand_for_two_spawns_exactly_one(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path, store: PostgresStore, kill_after_decide: bool
) -> None:
    settings = fast_settings(database_url, tmp_path, idle_timeout_s=120, scale_down_stabilization_s=120)
    name = unique_name("scaler-1755")
    with fleet_cleanup(settings, [name]):
        store.insert_tasks([NewTask(task_type="travel_orchestrator", user_id="u1", params={"duration_s": 120})])
        remote.get_or_create_scaler(
            settings, name=name, probe_log_shipper=False, pause_after_decide_s=2.0 if kill_after_decide else 0.0
        )
        wait_for(
            lambda: [w for w in _live(store, WorkerState.ACTIVE) if w.tasks_in_progress == 1],
            90,
            "one active worker holding the first task",
            explain=lambda: explain_fleet(store),
        )
        first_ids = {w.id for w in store.list_workers(include_terminated=True)}
        assert len(first_ids) == 1
        seen_decisions = len(store.list_decisions())
        store.insert_tasks([NewTask(task_type="travel_segment", user_id="u2", params={"duration_s": 120})])
        if kill_after_decide:
            wait_for(
                lambda: [d for d in store.list_decisions()[seen_decisions:] if d.spawn_count > 0],
                30,
                "a decision to spawn for the second task",
                interval_s=0.05,
            )
            pid = actor_pid(name)
            assert pid is not None
            sigkill(pid)  # during the pause: decided and recorded, not yet acted on
        wait_for(
            lambda: len(_live(store, WorkerState.ACTIVE)) == 2,
            90,
            "two active workers",
            explain=lambda: explain_fleet(store),
        )
        stays_true(  # several more cycles: nothing more may spawn
            lambda: len(store.list_workers(include_terminated=True)) == 2,
            3 * settings.scaling.cycle_interval_s * 2,
            "no third worker",
            explain=lambda: explain_fleet(store),
        )
        spawns = [d for d in store.list_decisions()[seen_decisions:] if d.spawn_count > 0]
        assert sum(len(d.spawned_worker_ids) for d in spawns) == 1
        if kill_after_decide:
            assert _restarts(name) >= 1
            assert spawns[0].spawned_worker_ids == [], "the killed Scaler's decision was never carried out"


def test_sigkill_scaler_and_lifecycle_mid_spawn_converges(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path, store: PostgresStore
) -> None:
    settings = fast_settings(database_url, tmp_path, max_workers=2, local_boot_delay_s=4.0)
    name = unique_name("scaler-recovery")
    provider = LocalProvider(tmp_path)
    with fleet_cleanup(settings, [name]):
        store.insert_tasks(
            [NewTask(task_type="travel_segment", user_id=f"u{i}", params={"duration_s": 1.0}) for i in range(2)]
        )
        remote.get_or_create_scaler(settings, name=name, probe_log_shipper=False)
        spawning = wait_for(
            lambda: [w for w in _live(store, WorkerState.SPAWNING) if actor_pid(f"worker:{w.id}")],
            60,
            "a spawning worker with its lifecycle",
            interval_s=0.1,
        )
        victim = spawning[0].id
        lifecycle_pid = actor_pid(f"worker:{victim}")
        scaler_pid = actor_pid(name)
        assert lifecycle_pid and scaler_pid
        sigkill(lifecycle_pid)
        sigkill(scaler_pid)
        wait_for(lambda: _restarts(f"worker:{victim}") >= 1 and _restarts(name) >= 1, 60, "both actors restarted")
        wait_for(
            lambda: store.task_counts().get(TaskStatus.COMPLETE, 0) == 2,
            120,
            "both tasks complete",
            explain=lambda: explain_fleet(store),
        )
        wait_for(lambda: _live(store) == [], 90, "the fleet back to zero", explain=lambda: explain_fleet(store))
        workers = store.list_workers(include_terminated=True)
        assert len(workers) == 2, explain_fleet(store)
        assert provider.list("gpu-") == [], "no pod without an owner"
        for worker in workers:
            record = json.loads((provider.pods_dir / f"{worker.id}.json").read_text())
            assert record["id"] == worker.pod_id, "one pod per worker: the restarted lifecycle found it by name"
        assert all(t.attempts == 1 for t in store.list_tasks())


def test_two_orchestrators_one_acts_standby_takes_over_with_higher_epoch(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path, store: PostgresStore
) -> None:
    settings = fast_settings(database_url, tmp_path, lease_ttl_s=3.0, idle_timeout_s=120)
    name_a = unique_name("scaler-a")
    with fleet_cleanup(settings, [name_a]):
        store.insert_tasks([NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": 120})])
        a = remote.get_or_create_scaler(settings, name=name_a, probe_log_shipper=False)
        wait_for(lambda: ray.get(a.status.remote())["role"] == "leader", 30, "A leads")
        # B: a second orchestrator (here a plain in-process instance, as on another cluster).
        b = Scaler(
            settings, holder="other-cluster/scaler", name="scaler-b", lifecycles=remote.lifecycle_directory(settings)
        )
        try:
            wait_for(lambda: b.status()["role"] == "standby", 15, "B stands by")
            wait_for(lambda: _live(store, WorkerState.ACTIVE), 90, "A's worker is active")
            epoch_a = ray.get(a.status.remote())["epoch"]
            assert b.status()["leader_holder"] == ray.get(a.status.remote())["holder"]
            assert {d.holder for d in store.list_decisions()} == {ray.get(a.status.remote())["holder"]}

            ray.kill(a, no_restart=True)  # A dies without releasing its lease
            wait_for(lambda: b.status()["role"] == "leader", 30, "B takes over after the lease expires")
            assert b.status()["epoch"] > epoch_a
            with pytest.raises(StaleEpoch):
                store.record_decision(
                    DecisionRecord(
                        cycle_number=999,
                        leader_epoch=epoch_a,
                        holder="a",
                        inputs={},
                        spawn_count=0,
                        drain_worker_ids=[],
                        reasons=["stale: a write from the old leader"],
                    )
                )
            stays_true(  # B runs cycles as leader over A's fleet
                lambda: len(store.list_workers(include_terminated=True)) == 1,
                2.0,
                "B re-attached; it spawned nothing twice",
            )
            assert b.status()["phase_errors"] == {}
        finally:
            b.stop()


def test_worker_that_stops_heartbeating_is_replaced_and_its_task_done_elsewhere(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path, store: PostgresStore
) -> None:
    settings = fast_settings(database_url, tmp_path, max_workers=2, heartbeat_timeout_s=3.0)
    name = unique_name("scaler-hb")
    provider = LocalProvider(tmp_path)
    provider.set_fault("gpu-*", LocalFaults(stop_heartbeat_after_s=2.5))
    with fleet_cleanup(settings, [name]):
        (task_id,) = store.insert_tasks([NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": 8.0})])
        remote.get_or_create_scaler(settings, name=name, probe_log_shipper=False)
        silent = wait_for(lambda: [w for w in store.list_workers() if w.pod_id], 60, "the first pod is created")[0].id
        provider.set_fault("gpu-*", None)  # pods created from now on are healthy
        wait_for(
            lambda: (t := store.get_task(task_id)) is not None and t.status == TaskStatus.COMPLETE,
            120,
            "the task completes",
            explain=lambda: explain_fleet(store),
        )
        task = store.get_task(task_id)
        assert task is not None and task.worker_id != silent
        events = store.list_worker_events(worker_id=silent)
        codes = [e.reason.split(":")[0] for e in events]
        assert "heartbeat_lost" in codes and events[-1].to_status == "terminated", explain_fleet(store)
        assert provider.list("gpu-") == [] or all(p.name != silent for p in provider.list("gpu-"))


def test_provider_that_keeps_failing_opens_the_breaker_and_status_says_why(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path, store: PostgresStore
) -> None:
    settings = fast_settings(
        database_url, tmp_path, max_workers=2, min_attempts_for_breaker=2, failure_rate_threshold=0.5
    )
    name = unique_name("scaler-breaker")
    provider = LocalProvider(tmp_path)
    provider.set_fault("gpu-*", LocalFaults(never_start=True))
    with fleet_cleanup(settings, [name]):
        store.insert_tasks(
            [NewTask(task_type="travel_segment", user_id=f"u{i}", params={"duration_s": 1.0}) for i in range(2)]
        )
        scaler = remote.get_or_create_scaler(settings, name=name, probe_log_shipper=False)
        wait_for(
            lambda: ray.get(scaler.status.remote())["breaker"]["status"] == "open",
            90,
            "the breaker opens",
            explain=lambda: explain_fleet(store),
        )
        count = len(store.list_workers(include_terminated=True))
        stays_true(  # several cycles with the breaker open
            lambda: len(store.list_workers(include_terminated=True)) == count,
            3.0,
            "no spawn while the breaker is open",
            explain=lambda: explain_fleet(store),
        )
        data = control.collect_status(settings, scaler_name=name)
        scaler_status = data["ray"]["scaler"]
        assert scaler_status["breaker"]["status"] == "open"
        reasons = " ".join(scaler_status["last_decision"]["reasons"])
        assert "no spawn" in reasons and "breaker open" in reasons, reasons
        recorded = [r for d in store.list_decisions() for r in d.reasons if r.startswith("breaker opened")]
        assert recorded, "the opening is on record in scaling_decisions"
        control.render_status(data)
