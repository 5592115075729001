"""A timed Scaler cycle does not wait for the provider: its pod list is taken just before it, on
another thread. What must not change: every cycle's pods are listed after the previous cycle ended
and before that cycle reads the worker rows (so a pod being created is never taken for an orphan),
and an orphan pod is still found and dealt with. Real Postgres, real LocalProvider, real Scaler."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors.scaler import Scaler
from cloud.base import Pod, PodSpec
from cloud.local import LocalProvider
from config.settings import OrphanPodPolicy
from fleet.models import WorkerState
from store.base import WorkerRow
from store.postgres import PostgresStore
from tests.integration.test_fleet_silence import NoLifecycles
from tests.support.fleet_harness import fast_settings, unique_name

INTERVAL_S = 0.5
ORPHAN = "gpu-20250101_000000-0bad0bad"


class _Timeline:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, float, str]] = []  # (what, monotonic time, thread name)
        self.lists: list[tuple[float, float, str]] = []  # (began, ended, thread name) of each pod list

    def note(self, what: str) -> None:
        with self.lock:
            self.events.append((what, time.monotonic(), threading.current_thread().name))

    def at(self, what: str, began: float, ended: float) -> list[float]:
        return [at for w, at, _ in self.events if w == what and began <= at <= ended]


class _ListedProvider(LocalProvider):
    def __init__(self, timeline: _Timeline, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timeline = timeline

    def list(self, name_prefix: str) -> list[Pod]:
        began = time.monotonic()
        try:
            return super().list(name_prefix)
        finally:
            with self._timeline.lock:
                self._timeline.lists.append((began, time.monotonic(), threading.current_thread().name))


class _ReadStore(PostgresStore):
    def __init__(self, timeline: _Timeline, url: str) -> None:
        super().__init__(url, min_size=1, max_size=3)
        self._timeline = timeline

    def list_workers(self, include_terminated: bool = False, **kwargs: Any) -> list[WorkerRow]:
        self._timeline.note("rows read")
        return super().list_workers(include_terminated, **kwargs)


def test_timed_cycles_take_a_list_made_for_them_before_their_rows(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fast_settings(database_url, tmp_path, max_workers=0, cycle_interval_s=INTERVAL_S)
    assert settings.provider.orphan_pod_policy is OrphanPodPolicy.TERMINATE
    timeline = _Timeline()
    provider = _ListedProvider(timeline, tmp_path, boot_delay_s=0.0)
    scaler = Scaler(
        settings,
        holder="test/prefetch",
        name=unique_name("scaler-prefetch"),
        lifecycles=NoLifecycles(),
        store_factory=lambda s: _ReadStore(timeline, database_url),
        provider_factory=lambda s: provider,
        start=False,
    )
    schedule = scaler._prefetch.schedule

    def noted(due: float) -> None:  # the end of a cycle: its next list is planned
        timeline.note("cycle over")
        schedule(due)

    monkeypatch.setattr(scaler._prefetch, "schedule", noted)
    orphan: Pod | None = None
    try:
        cycles: list[tuple[float, float, dict[str, Any]]] = []
        started = time.monotonic()
        for n in range(8):
            # Start to start, as the Scaler's loop runs its timed cycles.
            time.sleep(max(0.0, started + INTERVAL_S - time.monotonic()) if n else 0.0)
            started = time.monotonic()
            if n == 4:  # a pod with our prefix and no worker row appears between two cycles
                orphan = provider.create(ORPHAN, PodSpec(image="none", gpu_types=["local"], start_command="sleep 60"))
            report = scaler.step()
            cycles.append((started, time.monotonic(), report))
            assert not report["phase_errors"], report
    finally:
        scaler.stop("test over")
    scaler_thread = threading.current_thread().name
    ahead = 0
    for i, (began, ended, _) in enumerate(cycles):
        (read,) = timeline.at("rows read", began, ended)
        own = [lst for lst in timeline.lists if lst[2] == scaler_thread and began <= lst[0] <= ended]
        before = [lst for lst in timeline.lists if lst[2] != scaler_thread and lst[1] <= read]
        used = own[-1] if own else max(before, key=lambda lst: lst[1])
        assert used[1] <= read, f"cycle {i}: its rows were read before its pods were listed"
        if i:
            (previous_over,) = timeline.at("cycle over", cycles[i - 1][0], cycles[i - 1][1])
            assert used[0] >= previous_over, f"cycle {i}: its pods were listed before the previous cycle was over"
        ahead += not own and i >= 2  # timed cycles after the first two (a list's length is known by then)
    # Most timed cycles did not wait for the provider (one whose list was late on a busy machine lists itself).
    assert ahead >= 3, f"only {ahead} of 6 timed cycles took a list made ahead"
    # The orphan was seen by a list made after it appeared, and terminated (orphan_pod_policy=terminate).
    assert orphan is not None
    store = PostgresStore(database_url, min_size=1, max_size=1)
    try:
        row = store.get_worker(ORPHAN)
        assert row is not None and row.status is WorkerState.TERMINATING, row
        assert row.metadata.get("orphan_pod") == orphan.id
    finally:
        store.close()
        provider.terminate(orphan.id)
