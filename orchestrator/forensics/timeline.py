"""`explain --since/--until`: a merged, time-ordered story of a window, silences flagged.

Decisions that changed something (or that a limit held back: capped at max_workers, breaker
open), every worker transition (with the time spent in the previous state), the orchestrator's
recorded starts and stops, and the start and end of each silence, in one list; decisions that
changed nothing are left out unless asked for (they are many and say "steady").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from orchestrator.forensics.formatting import clock, format_duration, iso, stamp
from orchestrator.forensics.silences import (
    DatabaseOutage,
    Gap,
    Silence,
    Stop,
    outage_line,
    outages_of,
    silence_line,
    silences_from_gaps,
    stop_line,
    stops_in,
    stops_of,
    without_outages,
    without_stops,
)
from orchestrator.forensics.wording import (
    decision_changes,
    decision_is_wish,
    decision_json,
    decision_kind,
    event_json,
    inputs_line,
    is_note,
    previous_events,
    transition_text,
)
from store.base import DecisionRecord, OrchestratorEvent, OrchestratorEventKind, WorkerEvent

__all__ = ["TimelineEntry", "TimelineReport", "build_timeline", "render_timeline"]

# Entries at the same second: a silence ends before the decision that ended it, and starts last.
# A start comes before what it started, a stop after what it ended.
_ORDER = {
    "silence_end": 0,
    "database_outage": 1,
    "infrastructure_fault": 1,
    "started": 1,
    "decision": 2,
    "transition": 3,
    "stopped": 4,
    "silence_start": 5,
}


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # decision, transition, started, stopped, silence_start, silence_end
    text: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "kind": self.kind, "text": self.text, **self.data}


@dataclass
class TimelineReport:
    since: datetime
    until: datetime
    cycle_interval_s: float
    threshold_s: float
    entries: list[TimelineEntry]
    silences: list[Silence]
    counts: dict[str, int]
    stops: list[Stop] = field(default_factory=list)  # clean stops whose stopped time overlaps the window
    outages: list[DatabaseOutage] = field(default_factory=list)  # database outages that touch the window

    def to_json(self) -> dict[str, Any]:
        return {
            "query": {"since": iso(self.since), "until": iso(self.until)},
            "outages": [o.to_json() for o in self.outages],
            "cycle_interval_s": self.cycle_interval_s,
            "silence_threshold_s": self.threshold_s,
            "counts": self.counts,
            "silences": [s.to_json() for s in self.silences],
            "stops": [s.to_json() for s in self.stops],
            "entries": [e.to_json() for e in self.entries],
        }


def _decision_entry(decision: DecisionRecord, at: datetime) -> TimelineEntry:
    reason = decision.reasons[0] if decision.reasons else ""
    text = f"decision #{decision.id} {decision_kind(decision)}"
    if decision.spawn_count:
        text += f": spawn {decision.spawn_count}"
    if decision.drain_worker_ids:
        text += f"{',' if decision.spawn_count else ':'} drain {', '.join(decision.drain_worker_ids)}"
    inputs = inputs_line({k: decision.inputs.get(k) for k in ("queued", "claimable", "in_progress", "capacity")})
    if inputs:
        text += f" ({inputs})"
    if reason:
        text += f" -- {reason}"
    return TimelineEntry(at, "decision", text, {"decision": decision_json(decision)})


def _run_entry(event: OrchestratorEvent) -> TimelineEntry:
    data: dict[str, Any] = {"kind": event.kind.value, "holder": event.holder, "reason": event.reason}
    if event.kind is OrchestratorEventKind.DATABASE_OUTAGE:
        data |= {"ended_at": iso(event.ended_at), "details": event.details}
        text = outage_line(outages_of([event])[0])
        return TimelineEntry(event.at, event.kind.value, text[0].lower() + text[1:], {"orchestrator_event": data})
    if event.kind in (OrchestratorEventKind.STARTED, OrchestratorEventKind.STOPPED):
        text = f"orchestrator {event.kind.value} ({event.reason}; {event.holder})"
        return TimelineEntry(event.at, event.kind.value, text, {"orchestrator_event": data})
    return TimelineEntry(event.at, event.kind.value, f"{event.reason} ({event.holder})", {"orchestrator_event": data})


def _silence_entries(silence: Silence, since: datetime, until: datetime) -> list[TimelineEntry]:
    start = silence.start or since
    entries = [
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
    ]
    if silence.end is not None and silence.end <= until:
        entries.append(
            TimelineEntry(
                silence.end,
                "silence_end",
                f"orchestrator heard from again after {format_duration(silence.seconds)}",
                {"silence": silence.to_json()},
            )
        )
    return entries


def build_timeline(
    *,
    since: datetime,
    until: datetime,
    decisions: Sequence[DecisionRecord],
    events: Sequence[WorkerEvent],
    history: Sequence[WorkerEvent] = (),
    gaps: Sequence[Gap],
    cycle_interval_s: float,
    threshold_s: float | None = None,
    decisions_without_change: bool = False,
    silence_until: datetime | None = None,
    runs: Sequence[OrchestratorEvent] = (),
) -> TimelineReport:
    """A merged, time-ordered story of the window. Decisions that changed nothing are left out
    unless asked for (they are many and say "steady"), except those a limit held back. `gaps`,
    `silence_until` and `runs` (the orchestrator's recorded starts and stops in the window, and the
    last one before it) as for `build_at_report`."""
    threshold = threshold_s if threshold_s is not None else 2 * cycle_interval_s
    window_decisions = [d for d in decisions if d.at is not None and since <= d.at <= until]
    window_events = [e for e in events if since <= e.at <= until]
    previous = previous_events([*history, *events])
    stops = stops_of(runs, [d.at for d in decisions if d.at is not None])
    outages = [o for o in outages_of(runs) if o.at <= until and (o.until is None or o.until >= since)]
    silences = without_outages(
        without_stops(
            silences_from_gaps(
                gaps, since=since, until=min(until, silence_until or until), threshold_s=threshold, events=window_events
            ),
            stops,
        ),
        outages,
        threshold,
    )
    entries: list[TimelineEntry] = [_run_entry(e) for e in runs if since <= e.at <= until]
    for decision in window_decisions:
        if not decision_changes(decision) and not decision_is_wish(decision) and not decisions_without_change:
            continue
        assert decision.at is not None
        entries.append(_decision_entry(decision, decision.at))
    for event in window_events:
        entries.append(
            TimelineEntry(
                event.at,
                "transition",
                transition_text(event, previous.get(event.id)),
                {"transition": event_json(event, previous.get(event.id))},
            )
        )
    for silence in silences:
        entries.extend(_silence_entries(silence, since, until))
    entries.sort(key=lambda e: (e.at, _ORDER[e.kind]))
    moves = [e for e in window_events if not is_note(e)]
    counts = {
        "decisions": len(window_decisions),
        "decisions_with_change": sum(1 for d in window_decisions if decision_changes(d)),
        "created": sum(1 for e in moves if e.to_status == "spawning"),
        "promoted": sum(1 for e in moves if e.to_status == "active"),
        "drained": sum(1 for e in moves if e.to_status == "draining"),
        "terminated": sum(1 for e in moves if e.to_status == "terminated"),
        "errors": sum(1 for e in moves if e.to_status == "error"),
        "silences": len(silences),
        "stops": sum(1 for e in runs if since <= e.at <= until and e.kind is OrchestratorEventKind.STOPPED),
        "database_outages": len(outages),
    }
    return TimelineReport(
        since=since,
        until=until,
        cycle_interval_s=cycle_interval_s,
        threshold_s=threshold,
        entries=entries,
        silences=silences,
        counts=counts,
        stops=stops_in(stops, since, until),
        outages=outages,
    )


def render_timeline(report: TimelineReport) -> str:
    lines = [f"Timeline {stamp(report.since)} to {stamp(report.until)}", ""]
    for silence in report.silences:
        lines.append(silence_line(silence, report.threshold_s, report.cycle_interval_s))
    for stop in report.stops:
        lines.append(stop_line(stop))
    for outage in report.outages:
        lines.append(outage_line(outage))
    if report.silences or report.stops or report.outages:
        lines.append("")
    day: date | None = None
    multi_day = report.since.date() != report.until.date()
    for entry in report.entries:
        if multi_day and entry.at.date() != day:
            day = entry.at.date()
            lines.append(f"-- {day.isoformat()}")
        marker = "!!" if entry.kind.startswith("silence") else "  "
        lines.append(f"{marker}{clock(entry.at)} {entry.text}")
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
