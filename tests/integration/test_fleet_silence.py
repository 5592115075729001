"""Many workers silent at once is an infrastructure fault: nobody is terminated for it.

Drives plain WorkerLifecycles (no Ray, no pods) over the test's own database: three active workers
whose pods the provider reports running. When most of them have been silent past the heartbeat
timeout at the same moment (as after a network or database fault), a lifecycle notes
`infrastructure_fault` on its worker's record and moves nobody to `error` (so the breaker counts
nothing), and the Scaler records the episode once as an orchestrator event for `explain`; when
only one is silent, that one is lost as always.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from actors.lifecycle import WorkerLifecycle
from actors.scaler import Scaler
from cloud import base as cloud
from fleet import policy
from fleet.models import WorkerState
from store.base import OrchestratorEventKind
from store.postgres import PostgresStore
from tests.support.fleet_harness import fast_settings

WORKERS = [f"gpu-20260101_000000-0000000{i}" for i in range(3)]


class RunningPods:
    """Every pod asked about is running: the heartbeat is the only thing that says anything here."""

    name = "local"

    def get(self, pod_id: str) -> cloud.Pod:
        return cloud.Pod(id=pod_id, name=pod_id.removeprefix("pod-"), status=cloud.PodStatus.RUNNING)

    def list(self, name_prefix: str) -> list[cloud.Pod]:
        return []

    def create(self, name: str, spec: cloud.PodSpec) -> cloud.Pod:
        raise AssertionError("no pod is created here")

    def terminate(self, pod_id: str) -> None:
        raise AssertionError("no pod is terminated here")

    def close(self) -> None:
        pass


def _fleet(store: PostgresStore, database_url: str, silent_s: dict[str, float]) -> None:
    """Active workers with pods, each last heard from `silent_s[worker]` seconds ago."""
    for worker_id in WORKERS:
        store.create_worker(worker_id, reason="scale_up: test")
        store.set_worker_pod(worker_id, f"pod-{worker_id}", None)
        store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: test")
    with psycopg.connect(database_url, autocommit=True) as conn:
        for worker_id, seconds in silent_s.items():
            conn.execute(
                "UPDATE orchestrator.workers SET last_heartbeat_at = now() - make_interval(secs => %s) WHERE id = %s",
                (seconds, worker_id),
            )


_OPENED: list[PostgresStore] = []


def _store(database_url: str) -> PostgresStore:
    store = PostgresStore(database_url, min_size=1, max_size=2)
    _OPENED.append(store)
    return store


def _close_all() -> None:
    while _OPENED:
        _OPENED.pop().close()


def _lifecycle(worker_id: str, database_url: str, tmp_path: Path) -> WorkerLifecycle:
    settings = fast_settings(database_url, tmp_path, heartbeat_timeout_s=4.0, mass_silence_grace_s=30.0)
    return WorkerLifecycle(
        worker_id,
        settings,
        store_factory=lambda s: _store(database_url),
        provider_factory=lambda s: RunningPods(),
        exit_hook=lambda: None,
        start=False,
    )


def test_most_of_the_fleet_silent_at_once_terminates_nobody(database_url: str, tmp_path: Path) -> None:
    store = PostgresStore(database_url, min_size=1, max_size=2)
    try:
        _fleet(store, database_url, {w: 30.0 for w in WORKERS})
        for worker_id in WORKERS:
            lifecycle = _lifecycle(worker_id, database_url, tmp_path)
            lifecycle.step()
            lifecycle.step()  # held: the second look changes nothing and notes nothing more
        events = store.list_worker_events()
        assert all(w.status is WorkerState.ACTIVE for w in store.list_workers()), events
        notes = [e for e in events if e.reason.startswith("infrastructure_fault:")]
        assert sorted(e.worker_id for e in notes) == WORKERS, events
        assert "3 of 3 workers silent" in notes[0].reason and "re-checked at" in notes[0].reason
        outcomes = policy.outcomes_from_events(
            (e.worker_id, e.at.timestamp(), e.from_status, e.to_status, e.reason) for e in events
        )
        assert not [o for o in outcomes if o.kind.is_failure()], outcomes  # the breaker counts nothing
    finally:
        store.close()
        _close_all()


def test_one_silent_worker_among_live_ones_is_lost_as_always(database_url: str, tmp_path: Path) -> None:
    store = PostgresStore(database_url, min_size=1, max_size=2)
    try:
        _fleet(store, database_url, {WORKERS[0]: 30.0, WORKERS[1]: 0.0, WORKERS[2]: 0.0})
        _lifecycle(WORKERS[0], database_url, tmp_path).step()
        row = store.get_worker(WORKERS[0])
        assert row is not None and row.status is WorkerState.ERROR
        (lost,) = [e for e in store.list_worker_events(worker_id=WORKERS[0]) if e.to_status == "error"]
        assert lost.reason.startswith("heartbeat_lost:"), lost
    finally:
        store.close()
        _close_all()


class NoLifecycles:
    """The Scaler's lifecycle directory, doing nothing: the lifecycles are not what is looked at here."""

    def __len__(self) -> int:
        return 0

    def ensure(self, worker_id: str) -> None:
        pass

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None:
        pass

    def keep_only(self, worker_ids: set[str]) -> None:
        pass


def test_the_scaler_records_the_fault_once_for_explain(database_url: str, tmp_path: Path) -> None:
    store = PostgresStore(database_url, min_size=1, max_size=2)
    settings = fast_settings(database_url, tmp_path, heartbeat_timeout_s=4.0)
    scaler = Scaler(
        settings,
        holder="test/fleet-silence",
        name="scaler-fleet-silence",
        lifecycles=NoLifecycles(),
        store_factory=lambda s: _store(database_url),
        provider_factory=lambda s: RunningPods(),
        start=False,
    )
    try:
        _fleet(store, database_url, {w: 30.0 for w in WORKERS})
        for _ in range(2):
            report = scaler.step()
            assert report["phase_errors"] == {}, report
        faults = [e for e in store.list_orchestrator_events() if e.kind is OrchestratorEventKind.INFRASTRUCTURE_FAULT]
        assert len(faults) == 1, faults
        assert faults[0].reason.startswith("infrastructure_fault: 3 of 3 workers silent") and faults[0].details == {
            "silent": WORKERS,
            "expected": 3,
        }
    finally:
        scaler.stop()
        store.close()
        _close_all()
