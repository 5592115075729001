"""`explain --at`: the decisions around one moment, their inputs and reasons, and what they caused.

Each decision in the window is linked to the transitions of the workers it named; creations and
drains that no decision names are listed apart, since those are what an incident asks about
("why two workers at 17:55?").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
    decision_json,
    decision_lines,
    event_json,
    is_note,
    previous_events,
    transition_text,
)
from store.base import DecisionRecord, OrchestratorEvent, WorkerEvent

__all__ = ["AtReport", "build_at_report", "render_at"]


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
    stops: list[Stop] = field(default_factory=list)  # clean stops whose stopped time overlaps the window
    outages: list[DatabaseOutage] = field(default_factory=list)  # database outages that touch the window

    def to_json(self) -> dict[str, Any]:
        return {
            "query": {"at": iso(self.at), "since": iso(self.since), "until": iso(self.until)},
            "cycle_interval_s": self.cycle_interval_s,
            "silence_threshold_s": self.threshold_s,
            "silences": [s.to_json() for s in self.silences],
            "stops": [s.to_json() for s in self.stops],
            "outages": [o.to_json() for o in self.outages],
            "decisions": [
                {
                    **decision_json(d),
                    "caused": [event_json(e, self.previous.get(e.id)) for e in self.caused.get(d.id or -1, [])],
                }
                for d in self.decisions
            ],
            "transitions_without_decision": [event_json(e, self.previous.get(e.id)) for e in self.unexplained],
            "other_transitions": [event_json(e, self.previous.get(e.id)) for e in self.other_events],
            "last_decision_before": None
            if self.last_decision_before is None
            else decision_json(self.last_decision_before),
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
    gaps: Sequence[Gap],
    cycle_interval_s: float,
    threshold_s: float | None = None,
    last_decision_before: DecisionRecord | None = None,
    silence_until: datetime | None = None,
    runs: Sequence[OrchestratorEvent] = (),
) -> AtReport:
    """`decisions` and `events` are those of [since, until] (events may run a little past `until`,
    to show what a decision near the end caused); `history` holds earlier events of the same workers
    so durations are measured from the real previous state; `gaps` the intervals between the
    orchestrator's signals as the database computed them (`silences.gaps_of`). `silence_until` caps
    an open-ended silence (the present, when the window reaches into the future). `runs` are the
    orchestrator's recorded starts and stops in the window and the last one before it: a gap while
    it was stopped is reported as the stop, not as a silence."""
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
        e
        for e in window_events
        if e.id not in explained and not is_note(e) and (e.from_status is None or e.to_status == "draining")
    ]
    unexplained_ids = {e.id for e in unexplained}
    other = [e for e in window_events if e.id not in explained and e.id not in unexplained_ids]
    stops = stops_of(runs, [d.at for d in decisions if d.at is not None])
    outages = [o for o in outages_of(runs) if o.at <= until and (o.until is None or o.until >= since)]
    silences = without_outages(
        without_stops(
            silences_from_gaps(
                gaps, since=since, until=min(until, silence_until or until), threshold_s=threshold, events=events
            ),
            stops,
        ),
        outages,
        threshold,
    )
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
        silences=silences,
        previous=previous_events([*history, *events]),
        last_decision_before=last_decision_before,
        stops=stops_in(stops, since, until),
        outages=outages,
    )


def render_at(report: AtReport) -> str:
    window = f"{clock(report.since)}-{clock(report.until)}"
    lines = [f"Around {stamp(report.at)} (window {window} UTC)", ""]
    for silence in report.silences:
        lines.append(silence_line(silence, report.threshold_s, report.cycle_interval_s))
    for stop in report.stops:
        lines.append(stop_line(stop))
    for outage in report.outages:
        lines.append(outage_line(outage))
    if report.silences or report.stops or report.outages:
        lines.append("")
    if not report.decisions:
        lines.append("No scaling decision was recorded in this window.")
        if report.last_decision_before is not None and report.last_decision_before.at is not None:
            lines.append(f"The last one before it was at {stamp(report.last_decision_before.at)}:")
            lines.extend("  " + line for line in decision_lines(report.last_decision_before))
        lines.append("")
    for decision in report.decisions:
        lines.extend(decision_lines(decision))
        caused = report.caused.get(decision.id or -1, [])
        if caused:
            lines.append("  caused:")
            for event in caused:
                lines.append(f"    {clock(event.at)} {transition_text(event, report.previous.get(event.id))}")
        lines.append("")
    if report.unexplained:
        lines.append("Transitions no decision in this window accounts for:")
        for event in report.unexplained:
            lines.append(f"  {clock(event.at)} {transition_text(event, report.previous.get(event.id))}")
        lines.append("")
    if report.other_events:
        lines.append("Other worker transitions in the window:")
        for event in report.other_events:
            lines.append(f"  {clock(event.at)} {transition_text(event, report.previous.get(event.id))}")
        lines.append("")
    if not report.silences:
        lines.append(
            f"The orchestrator was not silent for longer than {format_duration(report.threshold_s)} in this window."
        )
    return "\n".join(lines).rstrip() + "\n"
