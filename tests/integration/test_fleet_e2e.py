"""End to end on real parts: a real local Ray, a real Postgres, LocalProvider pods running the reference worker.

30 tasks from 3 users with a per-user limit of 2: the Scaler scales up, every task completes
exactly once, the fleet never holds more than max_workers, goes back to min_workers, every
terminated pod is gone at the provider, and worker_events holds every transition with a reason.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import ray
from pydantic import SecretStr

from actors import remote
from cloud.base import NotFound
from cloud.local import LocalProvider
from config.settings import ProviderKind
from fleet.lifecycle import TRANSITIONS
from fleet.models import WorkerState
from store.base import NewTask, TaskStatus
from store.postgres import PostgresStore
from tests.support.fleet_harness import explain_fleet, fast_settings, fleet_cleanup, kill_actor, unique_name
from tests.support.polling import wait_for

pytestmark = pytest.mark.ray


def _check_audit_trail(store: PostgresStore, worker_ids: list[str]) -> None:
    """Every worker's events form a legal path from creation to terminated, each with a coded reason."""
    for worker_id in worker_ids:
        events = store.list_worker_events(worker_id=worker_id)
        assert events[0].from_status is None and events[0].to_status == "spawning", events
        assert events[-1].to_status == "terminated", events
        # A note (a failed terminate, a duplicate pod) records without moving: it must name the
        # state the worker was in; the moves themselves form a legal path.
        moves = [e for e in events if e.from_status is None or e.from_status != e.to_status]
        for before, after in itertools.pairwise(events):
            assert after.from_status == before.to_status, events
        for before, after in itertools.pairwise(moves):
            assert WorkerState(after.to_status) in TRANSITIONS[WorkerState(before.to_status)], events
        for event in events:
            code, _, words = event.reason.partition(":")
            assert code.strip() and words.strip(), f"reason without code and words: {event}"


# What max_workers bounds (fleet.policy.decide): capacity (spawning, active) plus draining workers.
_BOUNDED = frozenset({WorkerState.SPAWNING, WorkerState.ACTIVE, WorkerState.DRAINING})


def _fleet_sizes(store: PostgresStore) -> list[tuple[int, str]]:
    """The number of workers in a bounded state after each worker event, replayed from the audit
    trail in write order (an event id is taken inside its transaction, so a spawn decided after a
    worker left is always ordered after that worker's event), with what each event was."""
    states: dict[str, WorkerState] = {}
    sizes = []
    for event in sorted(store.list_worker_events(), key=lambda e: e.id):
        states[event.worker_id] = WorkerState(event.to_status)
        size = sum(1 for state in states.values() if state in _BOUNDED)
        sizes.append((size, f"{event.at:%H:%M:%S.%f} {event.worker_id} {event.from_status}->{event.to_status}"))
    return sizes


def _check_never_above_max(store: PostgresStore, max_workers: int) -> int:
    """The peak fleet size over the whole run; fails naming the first event that took it past max_workers."""
    sizes = _fleet_sizes(store)
    over = next(((size, what) for size, what in sizes if size > max_workers), None)
    assert over is None, (
        f"{over[0]} workers at once (max_workers {max_workers}) after {over[1]}\n{explain_fleet(store)}"
    )
    return max((size for size, _ in sizes), default=0)


def test_thirty_tasks_three_users_scale_up_and_back(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    settings = fast_settings(database_url, tmp_path, max_workers=4, per_user_concurrency_limit=2)
    scaler_name = unique_name("scaler-e2e")
    store = PostgresStore(database_url, min_size=1, max_size=2)
    provider = LocalProvider(tmp_path)
    with fleet_cleanup(settings, [scaler_name]):
        store.insert_tasks(
            [
                NewTask(task_type="travel_segment", user_id=f"user-{i % 3}", params={"duration_s": 0.4})
                for i in range(30)
            ]
        )
        scaler = remote.get_or_create_scaler(settings, name=scaler_name, probe_log_shipper=False)

        def explain() -> str:
            return f"{explain_fleet(store)}\nscaler: {ray.get(scaler.status.remote(), timeout=10)}"

        wait_for(
            lambda: store.task_counts().get(TaskStatus.COMPLETE, 0) == 30,
            150,
            "all 30 tasks complete",
            interval_s=0.3,
            explain=explain,
        )
        tasks = store.list_tasks()
        assert len(tasks) == 30
        assert all(t.status == TaskStatus.COMPLETE and t.attempts == 1 for t in tasks), [
            (t.id, t.status, t.attempts) for t in tasks if t.status != TaskStatus.COMPLETE or t.attempts != 1
        ]
        wait_for(lambda: store.list_workers() == [], 90, "fleet back to min_workers (0)", explain=explain)
        peak = _check_never_above_max(store, settings.scaling.max_workers)
        assert peak >= 2, "the fleet should have scaled past one worker for 6 claimable tasks"
        workers = store.list_workers(include_terminated=True)
        assert 2 <= len(workers) <= settings.scaling.max_workers * 3
        assert provider.list("gpu-") == []
        for worker in workers:
            assert worker.status is WorkerState.TERMINATED and worker.termination_reason
            assert worker.pod_id is not None
            with pytest.raises(NotFound):
                provider.get(worker.pod_id)
        _check_audit_trail(store, [w.id for w in workers])

        decisions = store.list_decisions()
        spawned = [wid for d in decisions for wid in d.spawned_worker_ids]
        assert sorted(spawned) == sorted(w.id for w in workers), "every worker was spawned by a recorded decision"
        assert all(d.reasons and d.leader_epoch >= 1 for d in decisions)
    store.close()


class _PodRuntime:
    """Plays RunPod's machines: runs the reference worker for each pod the loopback API holds, with the
    env the orchestrator deployed it with, and stops it when the pod is terminated."""

    def __init__(self, api: Any, log_dir: Path) -> None:
        self._api = api
        self._log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _PodRuntime:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for proc in self._procs.values():
            proc.kill()
            proc.wait(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pod in list(self._api.pods.values()):
                proc = self._procs.get(pod.id)
                if pod.desired == "TERMINATED":
                    if proc is not None and proc.poll() is None:
                        proc.terminate()
                    continue
                if proc is None:
                    env = {**os.environ, **pod.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
                    log = open(self._log_dir / f"{pod.name}.log", "ab")  # noqa: SIM115 - closed with the process
                    self._procs[pod.id] = subprocess.Popen(
                        [sys.executable, "-m", "worker", "--handler", "worker.handlers:demo_handler"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )


def test_end_to_end_on_the_runpod_sdk_against_the_loopback_api(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    from tests.support.runpod_api import FakeRunPodApi

    store = PostgresStore(database_url, min_size=1, max_size=2)
    scaler_name = unique_name("scaler-runpod")
    with FakeRunPodApi(api_key="rp-test-key", boot_delay_s=0.5) as api, _PodRuntime(api, tmp_path):
        base = fast_settings(database_url, tmp_path, max_workers=2, per_user_concurrency_limit=1)
        settings = base.model_copy(
            update={
                "provider": base.provider.model_copy(
                    update={
                        "kind": ProviderKind.RUNPOD,
                        "runpod_api_key": SecretStr("rp-test-key"),
                        "runpod_api_base_url": api.base_url,
                    }
                )
            }
        )
        try:
            store.insert_tasks(
                [NewTask(task_type="travel_segment", user_id=f"u{i % 2}", params={"duration_s": 0.3}) for i in range(6)]
            )
            scaler = remote.get_or_create_scaler(settings, name=scaler_name, probe_log_shipper=False)

            def explain() -> str:
                return f"{explain_fleet(store)}\nscaler: {ray.get(scaler.status.remote(), timeout=10)}"

            wait_for(
                lambda: store.task_counts().get(TaskStatus.COMPLETE, 0) == 6, 120, "6 tasks complete", explain=explain
            )
            wait_for(lambda: store.list_workers() == [], 90, "fleet back to zero", explain=explain)
            _check_never_above_max(store, settings.scaling.max_workers)
            workers = store.list_workers(include_terminated=True)
            assert len(workers) == api.count("deploy"), "one deploy per worker: no pod created twice"
            assert all(p.desired == "TERMINATED" for p in api.pods.values())
            assert {p.name for p in api.pods.values()} == {w.id for w in workers}
            _check_audit_trail(store, [w.id for w in workers])
            assert all(w.gpu_type for w in workers)
        finally:
            kill_actor(scaler_name)
            for row in store.list_workers(include_terminated=True):
                kill_actor(f"worker:{row.id}")
            store.close()
