"""The workload: each trace row inserted as a task when its compressed arrival time comes.

`Replay.run` is the target of one thread; it inserts the rows due together in one call, waits on
an Event between arrivals (so `stop` ends it at once), and keeps a failure as `error` for the view
and the summary instead of raising: the run goes on and reports it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.demo import compression
from sim.trace import TraceTask

if TYPE_CHECKING:
    from store.base import Store

__all__ = ["Replay"]

logger = logging.getLogger(__name__)


class Replay:
    """Replays `rows` at `speed` times trace time; `submitted` counts the tasks inserted so far."""

    def __init__(self, rows: Sequence[TraceTask], speed: float) -> None:
        self.rows = rows
        self.speed = speed
        self.submitted = 0
        self.error: str | None = None
        self._stop = threading.Event()

    @property
    def total(self) -> int:
        return len(self.rows)

    def stop(self) -> None:
        """End the replay at its next wait (the cleanup calls this first)."""
        self._stop.set()

    def run(self, store: Store, t0: float) -> None:
        """Insert each trace row when its compressed arrival time comes, counted from `t0` (monotonic)."""
        try:
            first = min(r.arrival_s for r in self.rows)
            ids = [str(uuid.uuid4()) for _ in self.rows]
            order = sorted(range(len(self.rows)), key=lambda i: self.rows[i].arrival_s)
            pending: list[int] = []
            for i in order:
                due = (self.rows[i].arrival_s - first) / self.speed
                wait = due - (time.monotonic() - t0)
                if wait > 0 and pending:
                    self._insert(store, pending, ids)
                    pending = []
                if wait > 0 and self._stop.wait(wait):
                    return
                pending.append(i)
            if pending:
                self._insert(store, pending, ids)
        except Exception as exc:  # shown in the view and the summary; the run goes on
            logger.exception("replaying the trace failed")
            self.error = f"{type(exc).__name__}: {exc}"

    def _insert(self, store: Store, indexes: list[int], ids: list[str]) -> None:
        from store.base import NewTask

        tasks = []
        for i in indexes:
            row = self.rows[i]
            parent = row.depends_on  # an earlier row: the trace loader checks it
            tasks.append(
                NewTask(
                    id=ids[i],
                    task_type=row.task_type,
                    user_id=row.user_id,
                    params={"duration_s": compression.task_duration_s(row.duration_s, self.speed)},
                    depends_on=ids[parent] if parent is not None else None,
                )
            )
        store.insert_tasks(tasks)
        self.submitted += len(tasks)
