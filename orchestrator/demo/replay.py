"""The workload: each trace row inserted as a task when its compressed arrival time comes.

`Replay.run` is the target of one thread; it inserts the rows due together in one call, waits on
an Event between arrivals (so `stop` ends it at once), and keeps a failure as `error` for the view
and the summary instead of raising: the run goes on and reports it. A database out of reach is no
failure: the insert (safe to repeat, every id is given) is tried again with capped, jittered
backoff until it lands, and the rows due meanwhile go in with it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from orchestrator.demo import compression
from sim.trace import TraceTask

if TYPE_CHECKING:
    from store.base import Store

__all__ = ["ReighApp", "Replay"]

logger = logging.getLogger(__name__)

# Between tries of an insert while the database is out of reach.
_RETRY_BASE_S = 0.5
_RETRY_CAP_S = 5.0


class Replay:
    """Replays `rows` at `speed` times trace time; `submitted` counts the tasks inserted so far."""

    def __init__(self, rows: Sequence[TraceTask], speed: float, reigh: ReighApp | None = None) -> None:
        """`reigh` puts the tasks into a Reigh app's tables; None, through the store's native queue."""
        self.rows = rows
        self.speed = speed
        self._reigh = reigh
        self.submitted = 0
        self.error: str | None = None
        self._stop = threading.Event()

    def use(self, reigh: ReighApp) -> None:
        """Put the tasks into a Reigh app's tables (known once the run's database is)."""
        self._reigh = reigh

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
        """Insert the rows, again and again while the database is out of reach (until stopped)."""
        from fleet import supervision
        from store.base import DatabaseUnavailable

        outage: supervision.Outage | None = None
        while True:
            try:
                self._insert_once(store, indexes, ids)
            except DatabaseUnavailable as exc:
                outage = supervision.after_outage_failure(
                    outage, time.time(), str(exc), base_s=_RETRY_BASE_S, cap_s=_RETRY_CAP_S, jitter=random.random()
                )
                if outage.attempts == 1:  # once; the view says the rest
                    logger.warning("inserting %d task(s) waits for the database: %s", len(indexes), exc)
                if self._stop.wait(supervision.outage_wait_s(outage, time.time(), default_s=_RETRY_CAP_S)):
                    return
                continue
            if outage is not None:
                logger.info(
                    "inserted %d task(s) after %.0f s without the database", len(indexes), outage.seconds(time.time())
                )
            return

    def _insert_once(self, store: Store, indexes: list[int], ids: list[str]) -> None:
        if self._reigh is not None:
            self._reigh.insert(
                [(ids[i], self.rows[i], self._params(self.rows[i])) for i in indexes],
                {i: ids[p] for i in indexes if (p := self.rows[i].depends_on) is not None},
                indexes,
            )
            self.submitted += len(indexes)
            return
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
                    params=self._params(row),
                    depends_on=ids[parent] if parent is not None else None,
                )
            )
        store.insert_tasks(tasks)
        self.submitted += len(tasks)

    def _params(self, row: TraceTask) -> dict[str, float]:
        return {"duration_s": compression.task_duration_s(row.duration_s, self.speed)}


class ReighApp:
    """Puts the trace's tasks into a Reigh app's own tables, as the app would: each trace user becomes
    an app user with credits and a project (created once, named after the trace's user), each task
    type a `gpu` task type, a dependency a `dependant_on` array."""

    def __init__(self, conninfo: str, run_type: str) -> None:
        self._conninfo = conninfo
        self._run_type = run_type
        self._projects: dict[str, uuid.UUID] = {}
        self._task_types: set[str] = set()

    def insert(
        self, tasks: list[tuple[str, TraceTask, dict[str, float]]], parents: dict[int, str], indexes: list[int]
    ) -> None:
        """One transaction; safe to repeat. Raises DatabaseUnavailable while the database is out of
        reach, so the replay waits the outage out as it does for the native queue."""
        import psycopg

        from store import errors
        from store.reigh import fixture

        task_types = set(self._task_types)
        projects = dict(self._projects)
        try:
            with psycopg.connect(self._conninfo, connect_timeout=5) as conn, conn.transaction():
                # A repeat whose first try committed but lost its answer: the rows are there already.
                first = uuid.UUID(tasks[0][0]) if tasks else None
                if first is not None and conn.execute("SELECT 1 FROM public.tasks WHERE id = %s", (first,)).fetchone():
                    for _, row, _ in tasks:  # and so are the projects it made
                        found = conn.execute(
                            "SELECT id FROM public.projects WHERE name = %s LIMIT 1", (f"demo {row.user_id}",)
                        ).fetchone()
                        if found is not None:
                            projects.setdefault(row.user_id, found[0])
                    self._task_types, self._projects = task_types | {t[1].task_type for t in tasks}, projects
                    return
                for index, (task_id, row, params) in zip(indexes, tasks, strict=True):
                    if row.task_type not in task_types:
                        fixture.add_task_type(conn, row.task_type, self._run_type)
                        task_types.add(row.task_type)
                    project = projects.get(row.user_id)
                    if project is None:
                        user = fixture.add_user(conn, credits=1000, in_cloud=True, name=f"demo {row.user_id}")
                        project = projects[row.user_id] = fixture.add_project(conn, user, f"demo {row.user_id}")
                    parent = parents.get(index)
                    fixture.add_task(
                        conn,
                        project_id=project,
                        task_type=row.task_type,
                        params=params,
                        dependant_on=[parent] if parent else (),
                        task_id=uuid.UUID(task_id),
                    )
        except psycopg.OperationalError as exc:
            raise errors.unavailable(self._conninfo, "inserting the demo's Reigh tasks", exc) from exc
        # Only what committed is remembered: a rolled-back try made no user, project or type.
        self._task_types, self._projects = task_types, projects
