"""The glue between a running demo and `orchestrator.live_view`: one Snapshot per poll, and the
watch loop that shows them until the work is done and the fleet is back to zero (or time is up).

The store is read once per poll; the fleet size is sampled once a second for the sparkline.

A database outage is waited out: the view says "database unreachable since HH:MM:SS (N attempts)",
polls again with capped, jittered backoff, and moves its own deadlines by the time lost. Only an
outage longer than `database.outage_limit_s` ends the run (`OutageTooLong`, a clear message).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleet import supervision
from orchestrator.demo.replay import Replay
from orchestrator.demo.runtime import Runtime, Say
from store.base import DatabaseUnavailable

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle
    from rich.console import Console

    from actors.log_shipper import LogShipper
    from orchestrator.live_view import Snapshot

__all__ = ["OutageTooLong", "View", "shipper_health", "sparkline"]

_POLL_S = 0.5  # live view refresh


class OutageTooLong(Exception):
    """The database stayed unreachable longer than `database.outage_limit_s`: the demo gives up."""


class View:
    """What the live view shows of one run, and what it remembers between polls."""

    def __init__(self, runtime: Runtime, replay: Replay, *, trace_name: str, speed: float, duration_s: float) -> None:
        self.runtime = runtime
        self.replay = replay
        self.trace_name = trace_name
        self.speed = speed
        self.duration_s = duration_s
        self.fleet_history: list[int] = []  # live workers, one sample a second
        self.longest_boot_s = 0.0  # longest measured spawning -> active of this run
        # Tasks already final in the database before this run (a second demo on the same state dir).
        self.done_before = 0
        self.failed_before = 0
        self.outage: supervision.Outage | None = None  # the database out of reach, while it is
        self.outages: list[supervision.OutageRecord] = []  # those ridden out in this run
        self._last_snapshot: Snapshot | None = None

    def count_earlier_tasks(self) -> None:
        """Remember the tasks finished before this run, so the view counts only this run's."""
        counts = self.runtime.require_store().task_counts()
        self.done_before = counts.get("Complete", 0)
        self.failed_before = counts.get("Failed", 0) + counts.get("Cancelled", 0)

    def snapshot(self, phase: str) -> Snapshot:
        from orchestrator import live_view

        runtime = self.runtime
        store = runtime.require_store()
        since = runtime.started_at
        counts = store.task_counts()
        workers = store.list_workers(include_terminated=False)
        now = store.now()
        events = store.list_worker_events(since=since, limit=100_000)
        decisions = store.list_decisions(since=since, limit=1)
        last = decisions[-1] if decisions else None
        shipper, shipper_error = shipper_health(runtime.shipper)
        entered: dict[str, datetime] = {}
        spawned: dict[str, datetime] = {}
        for e in events:
            if e.at is not None and (e.worker_id not in entered or e.at >= entered[e.worker_id]):
                entered[e.worker_id] = e.at
            if e.from_status is None and e.at is not None:
                spawned[e.worker_id] = e.at
            elif e.to_status == "active" and e.from_status == "spawning" and e.worker_id in spawned:
                self.longest_boot_s = max(self.longest_boot_s, (e.at - spawned[e.worker_id]).total_seconds())
        second = int(time.monotonic() - runtime.t0)
        while len(self.fleet_history) <= second:  # one sample a second, the current count
            self.fleet_history.append(len(workers))
        self.fleet_history[second] = len(workers)
        return live_view.Snapshot(
            elapsed_s=time.monotonic() - runtime.t0,
            speed=self.speed,
            trace_name=self.trace_name,
            submitted=self.replay.submitted,
            total=self.replay.total,
            queued=counts.get("Queued", 0),
            running=counts.get("In Progress", 0),
            done=counts.get("Complete", 0) - self.done_before,
            failed=counts.get("Failed", 0) + counts.get("Cancelled", 0) - self.failed_before,
            workers=[
                live_view.WorkerLine(
                    id=w.id,
                    state=str(w.status),
                    age_s=(now - w.created_at).total_seconds(),
                    tasks_in_progress=w.tasks_in_progress,
                    in_state_s=(now - entered[w.id]).total_seconds() if w.id in entered else None,
                    idle_s=(now - w.idle_since).total_seconds()
                    if w.idle_since is not None and str(w.status) == "active"
                    else None,
                )
                for w in workers
            ],
            last_decision_at=last.at.strftime("%H:%M:%S") if last and last.at else None,
            last_decision_age_s=(now - last.at).total_seconds() if last and last.at else None,
            fleet_history=tuple(self.fleet_history),
            max_workers=runtime.settings.scaling.max_workers,
            last_decision=(last.reasons[0] if last.reasons else "") if last else None,
            shipper=shipper,
            shipper_error=shipper_error or self.replay.error,
            dashboard_url=runtime.dashboard_url,
            trace_endpoint=runtime.settings.telemetry.otlp_endpoint,
            spawns=sum(1 for e in events if e.from_status is None),
            terminations=sum(1 for e in events if e.to_status == "terminated"),
            phase=phase,
        )

    def tasks_finished(self) -> bool:
        """Every trace task submitted and in a final state."""
        if self.replay.submitted < self.replay.total and not self.replay.error:
            return False
        counts = self.runtime.require_store().task_counts()
        return not (counts.get("Queued", 0) or counts.get("In Progress", 0))

    def database_unreachable(self, exc: DatabaseUnavailable, say: Say) -> float:
        """One more failed poll: the outage goes on (said once when it begins); returns how long to
        wait before the next poll. Raises OutageTooLong past `database.outage_limit_s`."""
        database = self.runtime.settings.database
        now = time.time()
        if self.outage is None:
            say(f"the database is unreachable ({exc}); waiting for it, nothing is decided meanwhile")
        self.outage = supervision.after_outage_failure(
            self.outage,
            now,
            str(exc),
            base_s=_POLL_S,
            cap_s=database.outage_backoff_cap_s,
            jitter=random.random(),
        )
        if supervision.outage_over_limit(self.outage, now, database.outage_limit_s):
            raise OutageTooLong(
                f"{self.outage.summary()}, longer than database.outage_limit_s ({database.outage_limit_s:g} s; "
                f"ORCHESTRATOR_DATABASE__OUTAGE_LIMIT_S): giving up. Last error: {self.outage.last_error}"
            )
        return supervision.outage_wait_s(self.outage, now, default_s=_POLL_S)

    def database_back(self, say: Say) -> float:
        """The first good poll after an outage: says so; returns the seconds it lasted (0 if none)."""
        outage = self.outage
        if outage is None:
            return 0.0
        self.outage = None
        record = supervision.outage_record(outage, time.time(), ())
        self.outages.append(record)
        say(f"the database answers again after {record.seconds:.0f} s ({outage.attempts} attempts); the run goes on")
        return record.seconds

    def outage_snapshot(self, phase: str) -> Snapshot:
        """The view while the database is away: the last one read, saying so."""
        from orchestrator import live_view

        assert self.outage is not None
        base = self._last_snapshot or live_view.Snapshot(
            elapsed_s=0.0,
            speed=self.speed,
            trace_name=self.trace_name,
            submitted=self.replay.submitted,
            total=self.replay.total,
            queued=0,
            running=0,
            done=0,
            failed=0,
        )
        return dataclasses.replace(
            base,
            elapsed_s=time.monotonic() - self.runtime.t0,
            submitted=self.replay.submitted,
            phase=phase,
            database_outage=self.outage.summary(),
        )

    def watch(self, console: Console, live_ok: bool, say: Say) -> int:
        """Show the run until every task is done and the fleet is back to zero (or time runs out).
        A database outage is waited out (its length moves the deadlines); see the module docstring."""
        from rich.live import Live

        from orchestrator import live_view

        t0 = self.runtime.t0
        deadline = t0 + max(self.duration_s * 2, self.duration_s + 120)
        scale_down_by: float | None = None
        last_plain = 0.0
        phase = "running"
        live = Live(console=console, refresh_per_second=4, transient=False) if live_ok else None
        with live if live is not None else contextlib.nullcontext():
            while True:
                try:
                    snap = self.snapshot(phase)
                    tasks_done = self.tasks_finished()
                except DatabaseUnavailable as exc:
                    wait = self.database_unreachable(exc, say)
                    snap = self.outage_snapshot(phase)
                    if live is not None:
                        live.update(live_view.render(snap))
                    elif time.monotonic() - last_plain >= 5:
                        console.print(live_view.plain_line(snap), highlight=False, soft_wrap=True)
                        last_plain = time.monotonic()
                    time.sleep(wait)
                    continue
                lost = self.database_back(say)
                if lost:  # a minute without the database costs a minute, not the run
                    deadline += lost
                    if scale_down_by is not None:
                        scale_down_by += lost
                self._last_snapshot = snap
                if live is not None:
                    live.update(live_view.render(snap))
                elif time.monotonic() - last_plain >= 5:
                    console.print(live_view.plain_line(snap), highlight=False, soft_wrap=True)
                    last_plain = time.monotonic()
                # The snapshot's workers are the live ones; a stopped one is parked in the warm pool
                # (no GPU billed): the fleet has scaled down once only those are left.
                if tasks_done and all(w.state == "stopped" for w in snap.workers):
                    break
                if tasks_done:
                    phase = "scaling down"
                    if scale_down_by is None:
                        # The policy keeps an idle worker max(idle timeout, boot estimate) after the
                        # last demand, and no scale-down within the stabilization after a scale-up;
                        # give it that (with the slowest boot seen, so a loaded machine still scales
                        # down on its own) and some cycles before stopping the workers ourselves.
                        scaling = self.runtime.settings.scaling
                        keep = max(scaling.idle_timeout_s, self.longest_boot_s or scaling.default_boot_time_s)
                        scale_down_by = (
                            time.monotonic() + keep + scaling.scale_down_stabilization_s + 10 * scaling.cycle_interval_s
                        )
                    elif time.monotonic() > scale_down_by:
                        say("tasks done; stopping the workers that are still up")
                        break
                if time.monotonic() > deadline:
                    say(f"time is up after {time.monotonic() - t0:.0f} s; stopping")
                    break
                time.sleep(_POLL_S)
        if live is None:
            with contextlib.suppress(DatabaseUnavailable):  # the summary says what it can
                console.print(live_view.plain_line(self.snapshot("done")), highlight=False, soft_wrap=True)
        return 0


def shipper_health(shipper: ActorHandle[LogShipper] | None) -> tuple[dict[str, Any] | None, str | None]:
    """The LogShipper's health as the live view shows it, or the name of the error that hid it."""
    if shipper is None:
        return None, None
    import ray

    try:
        ref: ObjectRef[dict[str, Any]] = shipper.health.remote()  # LogShipper.health's return type
        h = ray.get(ref, timeout=2)
    except Exception as exc:
        return None, type(exc).__name__
    last_flush = h.get("last_flush_at")
    return {
        "healthy": bool(h.get("flusher_alive", True)) and not h.get("consecutive_failures"),
        "shipped": h.get("shipped"),
        "pending": h.get("records_pending"),
        "spool_bytes": h.get("spool_bytes"),
        "dropped": h.get("dropped_total"),
        "last_flush_age_s": None if not last_flush else max(0.0, h.get("now", time.time()) - last_flush),
        "last_error": h.get("last_error"),
    }, None


def sparkline(history: list[int], top: int) -> str:
    """The fleet size over the run for the summary, `-` when there is no sample."""
    from orchestrator import live_view

    return live_view.sparkline(history, top) or "-"
