"""The Scaler's cycle against a provider that fails, on real parts: the real `runpod` SDK talking to
the loopback RunPod API, a real Postgres, and the real Scaler and WorkerLifecycle classes. The
lifecycles run as plain instances in this process (`InProcessLifecycles`): no pod here ever runs a
worker, so nothing needs a Ray actor, and a test can read each lifecycle's health directly.

- The provider's `list` fails past its retry budget and one pod's `terminate` fails, for a while
  (the issue's 60 s, scaled down to OUTAGE_S; the shape is the same): decisions and spawns go on,
  the status names the failing phase, the failed terminate is on the worker's record with its
  reason and is retried with backoff, and health is ok again once the provider answers.
- Two pods with one worker's name: the extra one is terminated and the event recorded.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from actors.lifecycle import WorkerLifecycle
from actors.scaler import Scaler
from config.settings import OrchestratorSettings, ProviderKind
from fleet.models import WorkerState
from orchestrator import control, explain_queries, forensics
from store.base import NewTask
from store.postgres import PostgresStore
from tests.support.fleet_harness import explain_fleet, fast_settings, unique_name
from tests.support.polling import wait_for
from tests.support.runpod_api import FakeRunPodApi

API_KEY = "rpa_TEST_outage_0123456789"
# The issue asks for 60 s; the shape (list and one terminate failing past their retry budget, then
# answering again) is the same at this length, and the suite stays fast.
OUTAGE_S = 12.0
ORPHAN = "gpu-20250101_000000-0bad0bad"


class InProcessLifecycles:
    """A `provisioning.LifecycleDirectory` of plain WorkerLifecycle instances in this process."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self.by_id: dict[str, WorkerLifecycle] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def ensure(self, worker_id: str) -> None:
        with self._lock:
            if worker_id not in self.by_id:
                self.by_id[worker_id] = WorkerLifecycle(worker_id, self._settings, exit_hook=lambda: None)

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None:
        self.ensure(worker_id)
        self.by_id[worker_id].drain(reason, epoch)

    def keep_only(self, worker_ids: set[str]) -> None:
        """Finished lifecycles stay, so the test can read their health."""

    def stop_all(self) -> None:
        for lifecycle in list(self.by_id.values()):
            lifecycle.stop()


def _runpod_settings(database_url: str, tmp_path: Path, api: FakeRunPodApi) -> OrchestratorSettings:
    settings = fast_settings(database_url, tmp_path, spawn_timeout_s=600.0, max_workers=3)
    provider = settings.provider.model_copy(
        update={
            "kind": ProviderKind.RUNPOD,
            "runpod_api_key": SecretStr(API_KEY),
            "runpod_api_base_url": api.base_url,
            "request_max_attempts": 2,
            "request_max_seconds": 1.0,
        }
    )
    return settings.model_copy(update={"provider": provider})


@pytest.fixture
def api() -> Iterator[FakeRunPodApi]:
    with FakeRunPodApi(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def store(database_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(database_url, min_size=1, max_size=2)
    yield s
    s.close()


def _notes(store: PostgresStore, worker_id: str, code: str) -> list[Any]:
    return [e for e in store.list_worker_events(worker_id=worker_id) if e.reason.startswith(f"{code}:")]


def test_failing_list_and_a_pod_that_will_not_terminate_stall_nothing(
    database_url: str, tmp_path: Path, api: FakeRunPodApi, store: PostgresStore
) -> None:
    settings = _runpod_settings(database_url, tmp_path, api)
    orphan_pod = api.add_pod(ORPHAN)  # ours by its name, and no worker row knows it
    api.fail_for(OUTAGE_S, "terminate", pod_id=orphan_pod)
    lifecycles = InProcessLifecycles(settings)
    scaler = Scaler(settings, holder="test/outage", name=unique_name("scaler-outage"), lifecycles=lifecycles)
    try:
        # The orphan is recorded for termination; its lifecycle's terminate fails, is recorded with
        # its reason, and is retried with backoff.
        wait_for(
            lambda: _notes(store, ORPHAN, "terminate_failed"),
            20,
            "a failed terminate on record",
            explain=lambda: explain_fleet(store),
        )
        api.fail_for(OUTAGE_S, "pods")  # and now the provider cannot list pods either
        outage_ends = time.monotonic() + OUTAGE_S
        wait_for(lambda: scaler.health()["consecutive_failures"].get("pods", 0) >= 2, 10, "the pods phase fails")

        # Decisions and spawns go on during the outage.
        store.insert_tasks([NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": 1})])
        spawned = wait_for(
            lambda: [w for w in store.list_workers() if w.id != ORPHAN and w.pod_id],
            10,
            "a spawn during the outage",
            explain=lambda: explain_fleet(store),
        )
        assert time.monotonic() < outage_ends, "the spawn came only after the outage"
        assert spawned[0].status is WorkerState.SPAWNING
        assert [d for d in store.list_decisions() if d.spawn_count > 0]

        # What an operator sees: the failing phase, named, with its error; the orphan's lifecycle
        # says its terminate keeps failing.
        health = scaler.health()
        assert health["verdict"] == "failing" and health["consecutive_failures"]["pods"] >= 2, health
        text = "\n".join(control.scaler_lines(scaler.status(), time.time()))
        assert "pods failed" in text and "list pods" in text, text
        orphan_health = lifecycles.by_id[ORPHAN].health()
        assert orphan_health["verdict"] == "failing" and orphan_health["consecutive_failures"]["terminate"] >= 1

        # After the outage: the orphan is gone, the failures were retried with backoff (not every
        # step), and health is back to ok.
        wait_for(
            lambda: (row := store.get_worker(ORPHAN)) is not None and row.status is WorkerState.TERMINATED,
            OUTAGE_S + 30,
            "the orphan terminated after the outage",
            explain=lambda: explain_fleet(store),
        )
        wait_for(
            lambda: scaler.health()["ok"], 20, "the Scaler's health recovers", explain=lambda: str(scaler.health())
        )
        assert api.pods[orphan_pod].desired == "TERMINATED"
        failed = _notes(store, ORPHAN, "terminate_failed")
        # Backoff: far fewer attempts than lifecycle steps in the outage, ever further apart.
        steps = OUTAGE_S / settings.scaling.heartbeat_interval_s
        assert 2 <= len(failed) <= steps / 2, [e.reason for e in failed]
        gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(failed)]
        assert gaps[-1] > gaps[0], gaps
        assert lifecycles.by_id[ORPHAN].health()["consecutive_failures"] == {}
        # `explain --worker` shows each failed terminate with its reason, then the end.
        report = explain_queries.explain_worker(store, ORPHAN, cycle_interval_s=0.5, now=store.now())
        text = forensics.render_worker(report)
        assert "terminate_failed: the provider did not stop pod" in text and "orphan_pod:" in text, text
    finally:
        scaler.stop()
        lifecycles.stop_all()


def test_two_pods_with_one_workers_name_the_extra_one_is_terminated(
    database_url: str, tmp_path: Path, api: FakeRunPodApi, store: PostgresStore
) -> None:
    settings = _runpod_settings(database_url, tmp_path, api)
    lifecycles = InProcessLifecycles(settings)
    scaler = Scaler(settings, holder="test/duplicates", name=unique_name("scaler-dup"), lifecycles=lifecycles)
    try:
        store.insert_tasks([NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": 1})])
        worker = wait_for(lambda: [w for w in store.list_workers() if w.pod_id], 15, "a worker with its pod")[0]
        extra = api.add_pod(worker.id)  # a second pod with its name: a create the list did not show
        wait_for(
            lambda: api.pods[extra].desired == "TERMINATED",
            15,
            "the extra pod terminated",
            explain=lambda: explain_fleet(store),
        )
        assert api.pods[worker.pod_id or ""].desired != "TERMINATED", "the recorded pod stays"
        notes = _notes(store, worker.id, "duplicate_pod")
        assert len(notes) == 1 and extra in notes[0].reason and (worker.pod_id or "") in notes[0].reason
    finally:
        scaler.stop()
        lifecycles.stop_all()


def test_one_malformed_worker_row_leaves_the_cycle_its_input(
    database_url: str, tmp_path: Path, api: FakeRunPodApi, store: PostgresStore
) -> None:
    settings = _runpod_settings(database_url, tmp_path, api)
    bad = "gpu-20250101_000000-0badf00d"
    store.create_worker(bad, reason="scale_up: a row a bug will break")
    api.add_pod(bad)  # its pod: neither an orphan nor a duplicate while the row cannot be read
    with psycopg.connect(database_url, autocommit=True) as conn:  # a bug elsewhere wrote an array
        conn.execute("UPDATE orchestrator.workers SET metadata = '[1]'::jsonb WHERE id = %s", (bad,))
    store.insert_tasks([NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": 1})])
    lifecycles = InProcessLifecycles(settings)
    scaler = Scaler(settings, holder="test/malformed", lifecycles=lifecycles, start=False)
    try:
        report = scaler.step()
        assert report["phase_errors"] == {}, report
        assert bad in report["malformed_rows"] and "metadata" in report["malformed_rows"][bad]
        assert len(report["spawned"]) == 1, report  # decide and act had their input
        text = "\n".join(control.scaler_lines(scaler.status(), time.time()))
        assert f"worker row {bad} is malformed" in text, text
        assert api.pods and all(p.desired != "TERMINATED" for p in api.pods.values())
    finally:
        scaler.stop()
        lifecycles.stop_all()


class _HangingLifecycles(InProcessLifecycles):
    """A directory whose `ensure` hangs until released, as a Ray call that never answers would."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        super().__init__(settings)
        self.release = threading.Event()

    def ensure(self, worker_id: str) -> None:
        self.release.wait(60)


def test_a_cycle_that_hangs_is_called_stuck_with_its_phase_and_recovers(
    database_url: str, tmp_path: Path, api: FakeRunPodApi, store: PostgresStore
) -> None:
    settings = _runpod_settings(database_url, tmp_path, api)
    store.create_worker("gpu-20250101_000000-00000001", reason="scale_up: a live worker whose lifecycle hangs")
    lifecycles = _HangingLifecycles(settings)
    scaler = Scaler(settings, holder="test/stuck", lifecycles=lifecycles, stuck_after_s=2.0)
    try:
        health = wait_for(lambda: (h := scaler.health())["verdict"] == "stuck" and h, 15, "the loop is called stuck")
        assert not health["ok"] and "in phase act" in health["summary"], health
        text = "\n".join(control.scaler_lines(scaler.status(), time.time()))
        assert "STUCK" in text and "in phase act" in text, text
        lifecycles.release.set()
        wait_for(lambda: scaler.health()["ok"], 15, "health recovers once the call answers")
    finally:
        lifecycles.release.set()
        scaler.stop()
