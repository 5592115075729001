"""Builds `orchestrator explain`'s answers from database rows: pure, no I/O, no clock reads.

The questions are the ones the 17:55 incident could not answer (see the seed's forensic report):
why was this worker started, why was it stopped, and was the orchestrator alive at all. Each answer
is a plain data structure (`AtReport`, `WorkerReport`, `TimelineReport`) with a `to_json()` for
machines and a `render_*` function for people, so the formatting is unit-tested on rows built by
hand and the command itself only fetches rows.

The orchestrator counts as *silent* between two of its signals (a `scaling_decisions` row, or a
`system_logs` row with source_type `orchestrator`) that are further apart than the silence
threshold (by default twice its cycle interval: one late cycle is jitter, two is an outage).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from store.base import DecisionRecord, TaskRow, WorkerEvent, WorkerRow

__all__ = [
    "AtReport",
    "Silence",
    "TimeParseError",
    "TimelineEntry",
    "TimelineReport",
    "WorkerReport",
    "build_at_report",
    "build_timeline",
    "build_worker_report",
    "find_silences",
    "format_duration",
    "gaps_from_signals",
    "parse_time",
    "render_at",
    "render_timeline",
    "render_worker",
    "silences_from_gaps",
    "trace_id_of",
]

# Inputs shown first, in this order, when a decision is printed; the rest follow alphabetically.
_KEY_INPUTS = (
    "queued",
    "claimable",
    "in_progress",
    "desired",
    "capacity",
    "need",
    "surplus",
    "workers_spawning",
    "workers_active",
    "workers_draining",
    "workers_terminating",
    "workers_error",
    "breaker",
    "failure_rate",
    "boot_estimate_s",
    "keep_idle_s",
    "min_workers",
    "max_workers",
)

# What a transition is called in a timeline, by target state.
_VERBS = {
    "spawning": "created",
    "active": "promoted to active",
    "draining": "draining",
    "terminating": "terminating",
    "terminated": "terminated",
    "error": "error",
}


class TimeParseError(ValueError):
    """A time the user typed that we cannot read; the message names it and shows what works."""


# --------------------------------------------------------------------------------------------
# time


_BARE_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)(?:\s+ago)?$")
_AGO_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}


def parse_time(text: str, *, now: datetime) -> tuple[datetime | None, time | None]:
    """Read a user's time: a full timestamp (naive means UTC), `now`, `90m` / `2h ago` (before
    `now`), or a bare `HH:MM[:SS]` (UTC).

    Returns `(timestamp, None)`, or `(None, time_of_day)` for a bare time, whose day the caller
    picks (the most recent day with data at that time).
    """
    raw = text.strip()
    if raw.lower() == "now":
        return now, None
    ago = _AGO.match(raw.lower())
    if ago:
        return now - timedelta(seconds=float(ago[1]) * _AGO_SECONDS[ago[2]]), None
    match = _BARE_TIME.match(raw)
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise TimeParseError(f"cannot read the time {text!r}: hours 0-23, minutes and seconds 0-59")
        return None, time(hour, minute, second)
    candidate = raw.removesuffix(" UTC").replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise TimeParseError(
            f"cannot read the time {text!r}: use HH:MM, HH:MM:SS, a timestamp like 2025-10-16T17:55:00Z, "
            "or an age like 90m"
        ) from None
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed, None


def format_duration(seconds: float) -> str:
    """`56 s`, `2 min 37 s`, `3 h 5 min`, `2 d 4 h`: short and exact enough for a timeline."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _clock(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%S")


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or None."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) >= 3 and re.fullmatch(r"[0-9a-f]{32}", parts[1]):
        return parts[1]
    return None


# --------------------------------------------------------------------------------------------
# silence


@dataclass(frozen=True)
class Silence:
    """The orchestrator wrote no decision and no log between `start` and `end`."""

    start: datetime | None  # its last signal before the gap (None: none found before the window)
    end: datetime | None  # its first signal after the gap (None: still silent at the window's end)
    seconds: float  # length of the gap as far as it is known
    worker_transitions: int = 0  # worker_events rows written during the gap (someone was acting)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": _iso(self.start),
            "end": _iso(self.end),
            "seconds": round(self.seconds, 1),
            "worker_transitions_during": self.worker_transitions,
        }


Gap = tuple[datetime | None, datetime | None]  # (last signal before, first signal after); None: unknown


def gaps_from_signals(signals: Iterable[datetime], *, since: datetime, until: datetime) -> list[Gap]:
    """Every interval between consecutive signals, plus the open end after the last one.

    The interval before the first signal is left out when there is one: a database that starts
    mid-window means the orchestrator did not exist yet, not that it was silent.
    """
    ordered = sorted(set(signals))
    if not ordered:
        return [(None, None)]
    gaps: list[Gap] = list(itertools.pairwise(ordered))
    if ordered[-1] < until:
        gaps.append((ordered[-1], None))
    return gaps


def silences_from_gaps(
    gaps: Iterable[Gap],
    *,
    since: datetime,
    until: datetime,
    threshold_s: float,
    events: Sequence[WorkerEvent] = (),
) -> list[Silence]:
    """The gaps longer than `threshold_s` that overlap [since, until], with the worker transitions
    recorded while they lasted. An open end is measured to the window's edge."""
    silences: list[Silence] = []
    for start, end in gaps:
        lo = start or since
        hi = end or until
        if hi <= since or lo >= until:
            continue
        seconds = (hi - lo).total_seconds()
        if seconds <= threshold_s:
            continue
        during = sum(1 for e in events if lo < e.at < hi)
        silences.append(Silence(start=start, end=end, seconds=seconds, worker_transitions=during))
    return sorted(silences, key=lambda s: s.start or since)


def find_silences(
    signals: Iterable[datetime],
    *,
    since: datetime,
    until: datetime,
    threshold_s: float,
    events: Sequence[WorkerEvent] = (),
) -> list[Silence]:
    """Gaps longer than `threshold_s` between orchestrator signals that overlap [since, until].

    `signals` should include the last signal before `since` and the first after `until` when they
    exist, so a gap that began before the window is reported from its true start.
    """
    gaps = gaps_from_signals(signals, since=since, until=until)
    return silences_from_gaps(gaps, since=since, until=until, threshold_s=threshold_s, events=events)


def _silences(
    signals: Iterable[datetime],
    gaps: Sequence[Gap] | None,
    decisions: Sequence[DecisionRecord],
    since: datetime,
    until: datetime,
    threshold_s: float,
    events: Sequence[WorkerEvent],
) -> list[Silence]:
    if gaps is None:
        gaps = gaps_from_signals([*signals, *(d.at for d in decisions if d.at)], since=since, until=until)
    return silences_from_gaps(gaps, since=since, until=until, threshold_s=threshold_s, events=events)


def _silence_line(silence: Silence, threshold_s: float, cycle_interval_s: float) -> str:
    start = _clock(silence.start) if silence.start else "before the window"
    if silence.end is None:
        span = f"since {start} (still silent at the end of the window, at least {format_duration(silence.seconds)})"
    else:
        span = f"from {start} to {_clock(silence.end)} ({format_duration(silence.seconds)})"
    line = (
        f"ORCHESTRATOR SILENT {span}: no scaling decision and no orchestrator log for longer than "
        f"{format_duration(threshold_s)} (cycle interval {format_duration(cycle_interval_s)})"
    )
    if silence.worker_transitions:
        line += (
            f"; yet {silence.worker_transitions} worker transition(s) of this window happened during it, "
            "so something was acting while its decisions and logs went missing"
        )
    return line


# --------------------------------------------------------------------------------------------
# decisions and transitions


def _decision_kind(decision: DecisionRecord) -> str:
    if decision.spawn_count and decision.drain_worker_ids:
        return "scale up and down"
    if decision.spawn_count:
        return "scale up"
    if decision.drain_worker_ids:
        return "scale down"
    return "no change"


def _inputs_line(inputs: dict[str, Any]) -> str:
    keys = [k for k in _KEY_INPUTS if inputs.get(k) is not None]
    return ", ".join(f"{k} {inputs[k]}" for k in keys)


def _decision_json(decision: DecisionRecord) -> dict[str, Any]:
    return {
        "id": decision.id,
        "at": _iso(decision.at),
        "cycle_number": decision.cycle_number,
        "leader_epoch": decision.leader_epoch,
        "holder": decision.holder,
        "kind": _decision_kind(decision),
        "spawn_count": decision.spawn_count,
        "spawned_worker_ids": list(decision.spawned_worker_ids),
        "drain_worker_ids": list(decision.drain_worker_ids),
        "reasons": list(decision.reasons),
        "inputs": dict(decision.inputs),
        "breaker": dict(decision.breaker),
        "trace_id": decision.trace_id,
    }


def _event_json(event: WorkerEvent, previous: WorkerEvent | None) -> dict[str, Any]:
    return {
        "at": _iso(event.at),
        "worker_id": event.worker_id,
        "from": event.from_status,
        "to": event.to_status,
        "reason": event.reason,
        "seconds_in_previous_state": None if previous is None else round((event.at - previous.at).total_seconds(), 1),
    }


def _previous_events(history: Sequence[WorkerEvent]) -> dict[int, WorkerEvent]:
    """Event id -> the same worker's event before it, from each worker's full (or partial) history."""
    by_worker: dict[str, list[WorkerEvent]] = {}
    for event in history:
        by_worker.setdefault(event.worker_id, []).append(event)
    previous: dict[int, WorkerEvent] = {}
    for events in by_worker.values():
        events.sort(key=lambda e: (e.at, e.id))
        for before, after in itertools.pairwise(events):
            previous[after.id] = before
    return previous


def _transition_text(event: WorkerEvent, previous: WorkerEvent | None) -> str:
    verb = _VERBS.get(event.to_status, event.to_status)
    text = f"worker {event.worker_id} {verb}"
    if previous is not None:
        text += f" ({format_duration((event.at - previous.at).total_seconds())} {previous.to_status})"
    if event.reason:
        text += f": {event.reason}"
    return text


# --------------------------------------------------------------------------------------------
# --at


@dataclass
class AtReport:
    """Decisions around one moment, their inputs and reasons, and the transitions they caused."""

    at: datetime
    since: datetime
    until: datetime
    cycle_interval_s: float
    threshold_s: float
    decisions: list[DecisionRecord]
    caused: dict[int, list[WorkerEvent]]  # decision id -> transitions of the workers it named
    unexplained: list[WorkerEvent]  # creations and drains in the window no decision names
    other_events: list[WorkerEvent]  # every other transition in the window
    silences: list[Silence]
    previous: dict[int, WorkerEvent] = field(default_factory=dict)
    last_decision_before: DecisionRecord | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "query": {"at": _iso(self.at), "since": _iso(self.since), "until": _iso(self.until)},
            "cycle_interval_s": self.cycle_interval_s,
            "silence_threshold_s": self.threshold_s,
            "silences": [s.to_json() for s in self.silences],
            "decisions": [
                {
                    **_decision_json(d),
                    "caused": [_event_json(e, self.previous.get(e.id)) for e in self.caused.get(d.id or -1, [])],
                }
                for d in self.decisions
            ],
            "transitions_without_decision": [_event_json(e, self.previous.get(e.id)) for e in self.unexplained],
            "other_transitions": [_event_json(e, self.previous.get(e.id)) for e in self.other_events],
            "last_decision_before": None
            if self.last_decision_before is None
            else _decision_json(self.last_decision_before),
        }


def _caused_by(decision: DecisionRecord, events: Sequence[WorkerEvent]) -> list[WorkerEvent]:
    named = set(decision.spawned_worker_ids) | set(decision.drain_worker_ids)
    start = decision.at or datetime.min.replace(tzinfo=UTC)
    return [e for e in events if e.worker_id in named and e.at >= start - timedelta(seconds=1)]


def build_at_report(
    *,
    at: datetime,
    since: datetime,
    until: datetime,
    decisions: Sequence[DecisionRecord],
    events: Sequence[WorkerEvent],
    history: Sequence[WorkerEvent] = (),
    signals: Iterable[datetime] = (),
    gaps: Sequence[Gap] | None = None,
    cycle_interval_s: float,
    threshold_s: float | None = None,
    last_decision_before: DecisionRecord | None = None,
    silence_until: datetime | None = None,
) -> AtReport:
    """`decisions` and `events` are those of [since, until] (events may run a little past `until`,
    to show what a decision near the end caused); `history` holds earlier events of the same workers
    so durations are measured from the real previous state; `signals` the orchestrator's decision
    and log times, including the last one before the window and the first one after it (or `gaps`,
    the intervals between them as the database computed them). `silence_until` caps an open-ended
    silence (the present, when the window reaches into the future)."""
    threshold = threshold_s if threshold_s is not None else 2 * cycle_interval_s
    in_window = [d for d in decisions if d.at is None or since <= d.at <= until]
    caused: dict[int, list[WorkerEvent]] = {}
    explained: set[int] = set()
    for decision in in_window:
        mine = _caused_by(decision, events)
        caused[decision.id or -1] = mine
        explained.update(e.id for e in mine)
    window_events = [e for e in events if since <= e.at <= until]
    unexplained = [
        e for e in window_events if e.id not in explained and (e.from_status is None or e.to_status == "draining")
    ]
    unexplained_ids = {e.id for e in unexplained}
    other = [e for e in window_events if e.id not in explained and e.id not in unexplained_ids]
    return AtReport(
        at=at,
        since=since,
        until=until,
        cycle_interval_s=cycle_interval_s,
        threshold_s=threshold,
        decisions=in_window,
        caused=caused,
        unexplained=unexplained,
        other_events=other,
        silences=_silences(signals, gaps, in_window, since, min(until, silence_until or until), threshold, events),
        previous=_previous_events([*history, *events]),
        last_decision_before=last_decision_before,
    )


def _decision_lines(decision: DecisionRecord) -> list[str]:
    when = _clock(decision.at) if decision.at else "??:??:??"
    head = f"{when} decision #{decision.id} (cycle {decision.cycle_number}, epoch {decision.leader_epoch}"
    head += f", {decision.holder}): {_decision_kind(decision)}"
    if decision.spawn_count:
        head += f", spawn {decision.spawn_count}"
        if decision.spawned_worker_ids:
            head += f" -> {', '.join(decision.spawned_worker_ids)}"
    if decision.drain_worker_ids:
        head += f", drain {', '.join(decision.drain_worker_ids)}"
    lines = [head]
    inputs = _inputs_line(decision.inputs)
    if inputs:
        lines.append(f"  inputs:  {inputs}")
    for reason in decision.reasons:
        lines.append(f"  because: {reason}")
    if decision.trace_id:
        lines.append(f"  trace:   {decision.trace_id}")
    return lines


def render_at(report: AtReport) -> str:
    window = f"{_clock(report.since)}-{_clock(report.until)}"
    lines = [f"Around {_stamp(report.at)} (window {window} UTC)", ""]
    for silence in report.silences:
        lines.append(_silence_line(silence, report.threshold_s, report.cycle_interval_s))
    if report.silences:
        lines.append("")
    if not report.decisions:
        lines.append("No scaling decision was recorded in this window.")
        if report.last_decision_before is not None and report.last_decision_before.at is not None:
            lines.append(f"The last one before it was at {_stamp(report.last_decision_before.at)}:")
            lines.extend("  " + line for line in _decision_lines(report.last_decision_before))
        lines.append("")
    for decision in report.decisions:
        lines.extend(_decision_lines(decision))
        caused = report.caused.get(decision.id or -1, [])
        if caused:
            lines.append("  caused:")
            for event in caused:
                lines.append(f"    {_clock(event.at)} {_transition_text(event, report.previous.get(event.id))}")
        lines.append("")
    if report.unexplained:
        lines.append("Transitions no decision in this window accounts for:")
        for event in report.unexplained:
            lines.append(f"  {_clock(event.at)} {_transition_text(event, report.previous.get(event.id))}")
        lines.append("")
    if report.other_events:
        lines.append("Other worker transitions in the window:")
        for event in report.other_events:
            lines.append(f"  {_clock(event.at)} {_transition_text(event, report.previous.get(event.id))}")
        lines.append("")
    if not report.silences:
        lines.append(
            f"The orchestrator was not silent for longer than {format_duration(report.threshold_s)} in this window."
        )
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# --worker


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

    @property
    def trace_id(self) -> str | None:
        return trace_id_of(self.worker.trace_context)

    def phases(self) -> list[tuple[str, datetime, datetime | None, float]]:
        """(state, entered, left or None, seconds) for each state the worker was in."""
        out = []
        events = sorted(self.events, key=lambda e: (e.at, e.id))
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
                "created_at": _iso(w.created_at),
                "promoted_at": _iso(w.promoted_at),
                "last_heartbeat_at": _iso(w.last_heartbeat_at),
                "terminated_at": _iso(w.terminated_at),
                "termination_reason": w.termination_reason,
                "trace_context": w.trace_context,
                "trace_id": self.trace_id,
                "metadata": w.metadata,
            },
            "transitions": [_event_json(e, p) for e, p in zip(self.events, [None, *self.events[:-1]], strict=False)],
            "phases": [
                {"state": s, "entered": _iso(a), "left": _iso(b), "seconds": round(secs, 1)}
                for s, a, b, secs in self.phases()
            ],
            "tasks": [
                {
                    "id": t.id,
                    "task_type": t.task_type,
                    "status": t.status,
                    "user_id": t.user_id,
                    "created_at": _iso(t.created_at),
                    "claimed_at": _iso(t.claimed_at),
                    "finished_at": _iso(t.finished_at),
                    "attempts": t.attempts,
                    "error": t.error,
                }
                for t in self.tasks
            ],
            "spawned_by": None if self.spawned_by is None else _decision_json(self.spawned_by),
            "drained_by": None if self.drained_by is None else _decision_json(self.drained_by),
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
    return WorkerReport(
        worker=worker,
        events=sorted(events, key=lambda e: (e.at, e.id)),
        tasks=sorted(tasks, key=lambda t: (t.claimed_at or t.created_at, t.id)),
        spawned_by=spawned_by,
        drained_by=drained_by,
        now=now,
        log_count=log_count,
    )


def render_worker(report: WorkerReport) -> str:
    w = report.worker
    lines = [f"Worker {w.id}: {w.status}"]
    details = [
        ("pod", w.pod_id),
        ("gpu", w.gpu_type),
        ("trace id", report.trace_id),
        ("created", _stamp(w.created_at)),
        ("promoted", _stamp(w.promoted_at) if w.promoted_at else None),
        ("last heartbeat", _stamp(w.last_heartbeat_at) if w.last_heartbeat_at else "never"),
        ("terminated", _stamp(w.terminated_at) if w.terminated_at else None),
        ("termination reason", w.termination_reason),
    ]
    lines += [f"  {label + ':':<20}{value}" for label, value in details if value]
    lines.append("")
    if report.spawned_by is not None:
        lines.append("Started by:")
        lines += ["  " + line for line in _decision_lines(report.spawned_by)]
    else:
        lines.append("Started by: no recorded decision names this worker")
    if report.drained_by is not None:
        lines.append("Stopped by:")
        lines += ["  " + line for line in _decision_lines(report.drained_by)]
    lines.append("")
    lines.append("Transitions:")
    previous: WorkerEvent | None = None
    for event in report.events:
        lines.append(f"  {_stamp(event.at)[:-4]} {_transition_text(event, previous)}")
        previous = event
    lines.append("")
    lines.append("Phases:")
    for state, entered, left, seconds in report.phases():
        ongoing = "" if left is not None or state == "terminated" else " (so far)"
        if state == "terminated":
            lines.append(f"  {state:<12} since {_clock(entered)}")
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
            claimed = _clock(task.claimed_at) if task.claimed_at else "--:--:--"
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


# --------------------------------------------------------------------------------------------
# --since/--until


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # decision, transition, silence_start, silence_end
    text: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"at": _iso(self.at), "kind": self.kind, "text": self.text, **self.data}


@dataclass
class TimelineReport:
    since: datetime
    until: datetime
    cycle_interval_s: float
    threshold_s: float
    entries: list[TimelineEntry]
    silences: list[Silence]
    counts: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "query": {"since": _iso(self.since), "until": _iso(self.until)},
            "cycle_interval_s": self.cycle_interval_s,
            "silence_threshold_s": self.threshold_s,
            "counts": self.counts,
            "silences": [s.to_json() for s in self.silences],
            "entries": [e.to_json() for e in self.entries],
        }


def build_timeline(
    *,
    since: datetime,
    until: datetime,
    decisions: Sequence[DecisionRecord],
    events: Sequence[WorkerEvent],
    history: Sequence[WorkerEvent] = (),
    signals: Iterable[datetime] = (),
    gaps: Sequence[Gap] | None = None,
    cycle_interval_s: float,
    threshold_s: float | None = None,
    decisions_without_change: bool = False,
    silence_until: datetime | None = None,
) -> TimelineReport:
    """A merged, time-ordered story of the window. Decisions that changed nothing are left out
    unless asked for (they are many and say "steady")."""
    threshold = threshold_s if threshold_s is not None else 2 * cycle_interval_s
    window_decisions = [d for d in decisions if d.at is not None and since <= d.at <= until]
    window_events = [e for e in events if since <= e.at <= until]
    previous = _previous_events([*history, *events])
    silences = _silences(
        signals, gaps, window_decisions, since, min(until, silence_until or until), threshold, window_events
    )
    entries: list[TimelineEntry] = []
    for decision in window_decisions:
        if not decision_changes(decision) and not decisions_without_change:
            continue
        assert decision.at is not None
        reason = decision.reasons[0] if decision.reasons else ""
        text = f"decision #{decision.id} {_decision_kind(decision)}"
        if decision.spawn_count:
            text += f": spawn {decision.spawn_count}"
        if decision.drain_worker_ids:
            text += f"{',' if decision.spawn_count else ':'} drain {', '.join(decision.drain_worker_ids)}"
        inputs = _inputs_line({k: decision.inputs.get(k) for k in ("queued", "claimable", "in_progress", "capacity")})
        if inputs:
            text += f" ({inputs})"
        if reason:
            text += f" -- {reason}"
        entries.append(TimelineEntry(decision.at, "decision", text, {"decision": _decision_json(decision)}))
    for event in window_events:
        entries.append(
            TimelineEntry(
                event.at,
                "transition",
                _transition_text(event, previous.get(event.id)),
                {"transition": _event_json(event, previous.get(event.id))},
            )
        )
    for silence in silences:
        start = silence.start or since
        entries.append(
            TimelineEntry(
                max(start, since),
                "silence_start",
                f"orchestrator goes silent: nothing from it for {format_duration(silence.seconds)}"
                + ("" if silence.end else " (to the end of the window)")
                + (
                    f"; {silence.worker_transitions} worker transition(s) recorded meanwhile"
                    if silence.worker_transitions
                    else ""
                ),
                {"silence": silence.to_json()},
            )
        )
        if silence.end is not None and silence.end <= until:
            entries.append(
                TimelineEntry(
                    silence.end,
                    "silence_end",
                    f"orchestrator heard from again after {format_duration(silence.seconds)}",
                    {"silence": silence.to_json()},
                )
            )
    order = {"silence_end": 0, "decision": 1, "transition": 2, "silence_start": 3}
    entries.sort(key=lambda e: (e.at, order[e.kind]))
    counts = {
        "decisions": len(window_decisions),
        "decisions_with_change": sum(1 for d in window_decisions if decision_changes(d)),
        "created": sum(1 for e in window_events if e.to_status == "spawning"),
        "promoted": sum(1 for e in window_events if e.to_status == "active"),
        "drained": sum(1 for e in window_events if e.to_status == "draining"),
        "terminated": sum(1 for e in window_events if e.to_status == "terminated"),
        "errors": sum(1 for e in window_events if e.to_status == "error"),
        "silences": len(silences),
    }
    return TimelineReport(
        since=since,
        until=until,
        cycle_interval_s=cycle_interval_s,
        threshold_s=threshold,
        entries=entries,
        silences=silences,
        counts=counts,
    )


def decision_changes(decision: DecisionRecord) -> bool:
    return bool(decision.spawn_count or decision.drain_worker_ids)


def render_timeline(report: TimelineReport) -> str:
    lines = [f"Timeline {_stamp(report.since)} to {_stamp(report.until)}", ""]
    for silence in report.silences:
        lines.append(_silence_line(silence, report.threshold_s, report.cycle_interval_s))
    if report.silences:
        lines.append("")
    day: date | None = None
    multi_day = report.since.date() != report.until.date()
    for entry in report.entries:
        if multi_day and entry.at.date() != day:
            day = entry.at.date()
            lines.append(f"-- {day.isoformat()}")
        marker = "!!" if entry.kind.startswith("silence") else "  "
        lines.append(f"{marker}{_clock(entry.at)} {entry.text}")
    if not report.entries:
        lines.append("  nothing was recorded in this window")
    c = report.counts
    lines.append("")
    lines.append(
        f"{c['decisions_with_change']} decision(s) that changed something ({c['decisions']} in all); "
        f"{c['created']} created, {c['promoted']} promoted, {c['drained']} drained, {c['terminated']} terminated, "
        f"{c['errors']} error(s); {c['silences']} silence(s) longer than {format_duration(report.threshold_s)}"
    )
    return "\n".join(lines).rstrip() + "\n"
