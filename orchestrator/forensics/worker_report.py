"""`explain --worker`: one worker's whole life, from the decision that started it to its end.

Its row, every transition with the time spent in each state, the tasks it claimed, and the
decisions that spawned, drained and resumed it (found among those near its creation, drain and
resumes from the warm pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.forensics.formatting import clock, format_duration, iso, stamp, trace_id_of
from orchestrator.forensics.wording import (
    decision_json,
    decision_lines,
    event_json,
    is_note,
    resumed_ids,
    transition_text,
)
from store.base import DecisionRecord, TaskRow, WorkerEvent, WorkerRow

__all__ = ["WorkerReport", "build_worker_report", "render_worker"]


@dataclass
class WorkerReport:
    """One worker's whole life."""

    worker: WorkerRow
    events: list[WorkerEvent]
    tasks: list[TaskRow]
    spawned_by: DecisionRecord | None
    drained_by: DecisionRecord | None
    now: datetime
    log_count: int | None = None
    resumed_by: list[DecisionRecord] = field(default_factory=list)  # from the warm pool, oldest first

    @property
    def trace_id(self) -> str | None:
        return trace_id_of(self.worker.trace_context)

    def phases(self) -> list[tuple[str, datetime, datetime | None, float]]:
        """(state, entered, left or None, seconds) for each state the worker was in."""
        out = []
        events = sorted((e for e in self.events if not is_note(e)), key=lambda e: (e.at, e.id))
        for index, event in enumerate(events):
            left = events[index + 1].at if index + 1 < len(events) else None
            end = left or (event.at if event.to_status == "terminated" else self.now)
            out.append((event.to_status, event.at, left, max(0.0, (end - event.at).total_seconds())))
        return out

    def to_json(self) -> dict[str, Any]:
        w = self.worker
        return {
            "worker": {
                "id": w.id,
                "status": str(w.status),
                "pod_id": w.pod_id,
                "gpu_type": w.gpu_type,
                "created_at": iso(w.created_at),
                "promoted_at": iso(w.promoted_at),
                "last_heartbeat_at": iso(w.last_heartbeat_at),
                "terminated_at": iso(w.terminated_at),
                "termination_reason": w.termination_reason,
                "trace_context": w.trace_context,
                "trace_id": self.trace_id,
                "metadata": w.metadata,
            },
            "transitions": [event_json(e, p) for e, p in zip(self.events, [None, *self.events[:-1]], strict=False)],
            "phases": [
                {"state": s, "entered": iso(a), "left": iso(b), "seconds": round(secs, 1)}
                for s, a, b, secs in self.phases()
            ],
            "tasks": [
                {
                    "id": t.id,
                    "task_type": t.task_type,
                    "status": t.status,
                    "user_id": t.user_id,
                    "created_at": iso(t.created_at),
                    "claimed_at": iso(t.claimed_at),
                    "finished_at": iso(t.finished_at),
                    "attempts": t.attempts,
                    "error": t.error,
                }
                for t in self.tasks
            ],
            "spawned_by": None if self.spawned_by is None else decision_json(self.spawned_by),
            "drained_by": None if self.drained_by is None else decision_json(self.drained_by),
            "resumed_by": [decision_json(d) for d in self.resumed_by],
            "system_log_rows": self.log_count,
        }


def build_worker_report(
    *,
    worker: WorkerRow,
    events: Sequence[WorkerEvent],
    tasks: Sequence[TaskRow],
    decisions: Sequence[DecisionRecord],
    now: datetime,
    log_count: int | None = None,
) -> WorkerReport:
    """`decisions` are those near the worker's creation and drain; the ones naming it are kept."""
    spawned_by = next((d for d in decisions if worker.id in d.spawned_worker_ids), None)
    drained_by = next((d for d in reversed(decisions) if worker.id in d.drain_worker_ids), None)
    resumed_by = {d.id: d for d in decisions if worker.id in resumed_ids(d)}  # the windows may overlap
    return WorkerReport(
        worker=worker,
        events=sorted(events, key=lambda e: (e.at, e.id)),
        tasks=sorted(tasks, key=lambda t: (t.claimed_at or t.created_at, t.id)),
        spawned_by=spawned_by,
        drained_by=drained_by,
        now=now,
        log_count=log_count,
        resumed_by=sorted(resumed_by.values(), key=lambda d: (d.at or now, d.id or 0)),
    )


def render_worker(report: WorkerReport) -> str:
    w = report.worker
    lines = [f"Worker {w.id}: {w.status}"]
    details = [
        ("pod", w.pod_id),
        ("gpu", w.gpu_type),
        ("trace id", report.trace_id),
        ("created", stamp(w.created_at)),
        ("promoted", stamp(w.promoted_at) if w.promoted_at else None),
        ("last heartbeat", stamp(w.last_heartbeat_at) if w.last_heartbeat_at else "never"),
        ("terminated", stamp(w.terminated_at) if w.terminated_at else None),
        ("termination reason", w.termination_reason),
    ]
    lines += [f"  {label + ':':<20}{value}" for label, value in details if value]
    lines.append("")
    if report.spawned_by is not None:
        lines.append("Started by:")
        lines += ["  " + line for line in decision_lines(report.spawned_by)]
    else:
        lines.append("Started by: no recorded decision names this worker")
    if report.drained_by is not None:
        lines.append("Stopped by:")
        lines += ["  " + line for line in decision_lines(report.drained_by)]
    for decision in report.resumed_by:
        lines.append("Resumed from the warm pool by:")
        lines += ["  " + line for line in decision_lines(decision)]
    lines.append("")
    lines.append("Transitions:")
    previous: WorkerEvent | None = None
    for event in report.events:
        lines.append(f"  {stamp(event.at)[:-4]} {transition_text(event, previous)}")
        previous = event
    lines.append("")
    lines.append("Phases:")
    for state, entered, left, seconds in report.phases():
        ongoing = "" if left is not None or state == "terminated" else " (so far)"
        if state == "terminated":
            lines.append(f"  {state:<12} since {clock(entered)}")
        else:
            lines.append(f"  {state:<12} {format_duration(seconds)}{ongoing}")
    if report.events:
        first = report.events[0].at
        end = w.terminated_at or report.now
        lines.append(f"  {'total':<12} {format_duration((end - first).total_seconds())}")
    lines.append("")
    if report.tasks:
        lines.append(f"Tasks ({len(report.tasks)}):")
        for task in report.tasks:
            claimed = clock(task.claimed_at) if task.claimed_at else "--:--:--"
            ran = ""
            if task.claimed_at and task.finished_at:
                ran = f" in {format_duration((task.finished_at - task.claimed_at).total_seconds())}"
            error = f" ({task.error})" if task.error else ""
            lines.append(f"  {claimed} {task.id} {task.task_type} {task.status}{ran}{error}")
    else:
        lines.append("Tasks: none")
    if report.log_count is not None:
        lines.append("")
        lines.append(f"Log rows from this worker in system_logs: {report.log_count}")
    return "\n".join(lines).rstrip() + "\n"
