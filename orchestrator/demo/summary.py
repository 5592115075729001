"""The figures of one demo run, from the rows it left in the database.

`summarize` is pure (rows in, `DemoResult` out); `of_run` and `example_worker` read the rows of
the run from the store.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from store.base import Store, TaskRow, WorkerEvent, WorkerRow

__all__ = ["DemoResult", "example_worker", "of_run", "summarize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoResult:
    tasks_total: int
    tasks_done: int
    tasks_failed: int
    tasks_unfinished: int
    spawns: int
    terminations: int
    billed_s: float
    busy_s: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    speed: float
    still_up: int = 0  # workers the scaler had not stopped when the run ended (the demo stops them)
    parked: int = 0  # workers the scaler parked in the warm pool (pod stopped) and the demo terminated
    scale_downs: int = 0  # drains the scaler decided

    def lines(self) -> list[str]:
        utilization = f"{100 * self.busy_s / self.billed_s:.0f}%" if self.billed_s else "-"
        wait = (
            "-"
            if self.wait_p50_s is None
            else f"p50 {self.wait_p50_s:.1f} s, p95 {self.wait_p95_s:.1f} s "
            f"(trace time: p50 {self.wait_p50_s * self.speed:.0f} s, p95 {(self.wait_p95_s or 0) * self.speed:.0f} s)"
        )
        return [
            f"tasks:        {self.tasks_done}/{self.tasks_total} done, {self.tasks_failed} failed, "
            f"{self.tasks_unfinished} unfinished",
            f"fleet:        {self.spawns} spawns, {self.terminations} terminations "
            f"({self.scale_downs} drained by the scaler when idle"
            + (f"; {self.parked} parked in the warm pool (pod stopped), terminated by the demo" if self.parked else "")
            + (f"; {self.still_up} still up at the end, stopped by the demo)" if self.still_up else ")"),
            f"GPU-seconds:  {self.billed_s:.1f} billed vs {self.busy_s:.1f} busy "
            f"({utilization} utilization, demo time)",
            f"queue wait:   {wait}",
        ]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def summarize(
    tasks: Sequence[TaskRow],
    workers: Sequence[WorkerRow],
    events: Sequence[WorkerEvent],
    *,
    now: datetime,
    speed: float,
) -> DemoResult:
    """Figures of one demo run from its rows (tasks, workers and worker_events created during it)."""
    done = [t for t in tasks if t.status == "Complete"]
    failed = [t for t in tasks if t.status in ("Failed", "Cancelled")]
    busy = sum((t.finished_at - t.claimed_at).total_seconds() for t in tasks if t.claimed_at and t.finished_at)
    billed = sum(((w.terminated_at or now) - w.created_at).total_seconds() for w in workers)
    waits = sorted((t.claimed_at - t.created_at).total_seconds() for t in tasks if t.claimed_at)
    return DemoResult(
        tasks_total=len(tasks),
        tasks_done=len(done),
        tasks_failed=len(failed),
        tasks_unfinished=len(tasks) - len(done) - len(failed),
        spawns=sum(1 for e in events if e.from_status is None),
        terminations=sum(1 for e in events if e.to_status == "terminated"),
        scale_downs=sum(1 for e in events if e.to_status == "draining"),
        still_up=sum(1 for w in workers if w.terminated_at is None and str(w.status) not in ("terminated", "stopped")),
        parked=sum(1 for w in workers if w.terminated_at is None and str(w.status) == "stopped"),
        billed_s=billed,
        busy_s=busy,
        wait_p50_s=_percentile(waits, 50),
        wait_p95_s=_percentile(waits, 95),
        speed=speed,
    )


def of_run(store: Store, since: datetime, speed: float) -> DemoResult:
    """The figures of the run that started at `since` (database time)."""
    tasks = [t for t in store.list_tasks(limit=1_000_000) if t.created_at >= since]
    workers = [w for w in store.list_workers(include_terminated=True) if w.created_at >= since]
    events = store.list_worker_events(since=since, limit=1_000_000)
    return summarize(tasks, workers, events, now=store.now(), speed=speed)


def example_worker(store: Store | None, since: datetime) -> str | None:
    """A worker of this run the scaler started and drained: the one to `explain --worker`."""
    if store is None:
        return None
    try:
        events = store.list_worker_events(since=since, limit=100_000)
    except Exception as exc:  # only the closing hint needs it: said, and the run's result stands
        logger.warning("demo: could not read the worker events for an example worker: %s", type(exc).__name__)
        return None
    drained = [e.worker_id for e in events if e.to_status == "draining"]
    created = [e.worker_id for e in events if e.from_status is None]
    candidates = drained or created
    return candidates[0] if candidates else None
