"""A timed Scaler cycle does not wait for the provider: its pod list is taken just before it, on
another thread. What must not change: every cycle's pods are listed after the previous cycle ended
and before that cycle reads the worker rows (so a pod being created is never taken for an orphan),
and an orphan pod is still found and dealt with. Real Postgres, real LocalProvider, real Scaler."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

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

    def note(self, what: str) -> None:
        with self.lock:
            self.events.append((what, time.monotonic(), threading.current_thread().name))


class _ListedProvider(LocalProvider):
    def __init__(self, timeline: _Timeline, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timeline = timeline

    def list(self, name_prefix: str) -> list[Pod]:
        self._timeline.note("list began")
        try:
            return super().list(name_prefix)
        finally:
            self._timeline.note("list ended")


class _ReadStore(PostgresStore):
    def __init__(self, timeline: _Timeline, url: str) -> None:
        super().__init__(url, min_size=1, max_size=3)
        self._timeline = timeline

    def list_workers(self, include_terminated: bool = False, **kwargs: Any) -> list[WorkerRow]:
        self._timeline.note("rows read")
        return super().list_workers(include_terminated, **kwargs)


def test_timed_cycles_take_a_list_made_for_them_before_their_rows(database_url: str, tmp_path: Path) -> None:
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
    for i, (began, ended, _) in enumerate(cycles):
        in_cycle = [(what, at, thread) for what, at, thread in timeline.events if began <= at <= ended]
        read = next(at for what, at, _ in in_cycle if what == "rows read")
        lists = [(what, at, thread) for what, at, thread in timeline.events if what == "list ended" and at <= read]
        assert lists, f"cycle {i}: no pod list before its rows"
        last_list_end = lists[-1][1]
        previous_end = cycles[i - 1][1] if i else 0.0
        began_at = max(at for what, at, _ in timeline.events if what == "list began" and at <= last_list_end)
        assert began_at >= previous_end, f"cycle {i}: its pods were listed before the previous cycle ended"
        if i >= 2:  # timed cycles after the first two (the first list measures how long a list takes)
            own = [thread for what, _, thread in in_cycle if what == "list began"]
            assert scaler_thread not in own, f"cycle {i} waited for the provider on its own thread"
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
