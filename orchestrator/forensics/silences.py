"""When the orchestrator was silent: the gaps the database found, measured against a window.

The orchestrator counts as *silent* between two of its signals (a `scaling_decisions` row, or a
`system_logs` row with source_type `orchestrator`) that are further apart than the silence
threshold (by default twice its cycle interval: one late cycle is jitter, two is an outage).
The gaps themselves are found in SQL (`Store.explain_silences`, one indexed query however long
the history); this module only turns that answer into `Silence`s and words them.

A clean stop is no silence: `orchestrator down`, the demo's end and a SIGTERM are recorded
(`orchestrator_events`, with the reason), and from a stop until the next start (a recorded start,
or a decision) a gap is reported as "stopped at ... (reason)", never as ORCHESTRATOR SILENT.

A database outage is no silence either: the Scaler records it once the database is back (an
`orchestrator_events` row of kind `database_outage`, with its start, end and what waited), and a
gap that lies within it (give or take the silence threshold) is reported as that outage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orchestrator.forensics.formatting import clock, format_duration, iso
from store.base import OrchestratorEvent, OrchestratorEventKind, OrchestratorSignals, WorkerEvent

__all__ = [
    "DatabaseOutage",
    "Gap",
    "Silence",
    "Stop",
    "gaps_of",
    "outage_line",
    "outages_of",
    "silence_line",
    "silences_from_gaps",
    "stop_line",
    "stops_in",
    "stops_of",
    "without_outages",
    "without_stops",
]

Gap = tuple[datetime | None, datetime | None]  # (last signal before, first signal after); None: unknown


@dataclass(frozen=True)
class Silence:
    """The orchestrator wrote no decision and no log between `start` and `end`."""

    start: datetime | None  # its last signal before the gap (None: none found before the window)
    end: datetime | None  # its first signal after the gap (None: still silent at the window's end)
    seconds: float  # length of the gap as far as it is known
    worker_transitions: int = 0  # worker_events rows written during the gap (someone was acting)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "seconds": round(self.seconds, 1),
            "worker_transitions_during": self.worker_transitions,
        }


def gaps_of(signals: OrchestratorSignals) -> list[Gap]:
    """The database's gaps, plus an open end after the last signal when none follows the window,
    or one gap open at both ends when the orchestrator was never heard from up to the window's end."""
    gaps: list[Gap] = [(g.start, g.end) for g in signals.gaps]
    last = signals.last_inside or signals.last_before
    if last is None and signals.first_after is None:
        return [(None, None)]  # nothing from the orchestrator, ever, up to the window's end
    if signals.first_after is None and last is not None:
        gaps.append((last, None))  # silent to the end of the window (so far)
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


def silence_line(silence: Silence, threshold_s: float, cycle_interval_s: float) -> str:
    """`ORCHESTRATOR SILENT from 17:35:31 to 17:55:06 (19 min 35 s): ...`, for the head of a report."""
    start = clock(silence.start) if silence.start else "before the window"
    if silence.end is None:
        span = f"since {start} (still silent at the end of the window, at least {format_duration(silence.seconds)})"
    else:
        span = f"from {start} to {clock(silence.end)} ({format_duration(silence.seconds)})"
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


@dataclass(frozen=True)
class Stop:
    """The orchestrator was stopped cleanly at `at` (why: `reason`; recorded by `holder`) and did not
    run again until `until` (its next start; None: not started again as far as was read)."""

    at: datetime
    reason: str
    holder: str
    until: datetime | None = None

    def covers(self, moment: datetime) -> bool:
        return self.at <= moment and (self.until is None or moment < self.until)

    def to_json(self) -> dict[str, Any]:
        return {"at": iso(self.at), "reason": self.reason, "holder": self.holder, "started_again_at": iso(self.until)}


def stops_of(events: Iterable[OrchestratorEvent], restarts: Iterable[datetime] = ()) -> list[Stop]:
    """Each recorded stop, ended by the first start after it: a `started` event, or one of `restarts`
    (the times of decisions, which only a running orchestrator writes)."""
    ordered = sorted(events, key=lambda e: (e.at, e.id))
    starts = sorted([*(e.at for e in ordered if e.kind is OrchestratorEventKind.STARTED), *restarts])
    return [
        Stop(at=e.at, reason=e.reason, holder=e.holder, until=next((s for s in starts if s > e.at), None))
        for e in ordered
        if e.kind is OrchestratorEventKind.STOPPED
    ]


def stops_in(stops: Iterable[Stop], since: datetime, until: datetime) -> list[Stop]:
    """The stops whose stopped time overlaps [since, until]."""
    return [s for s in stops if s.at <= until and (s.until is None or s.until >= since)]


def without_stops(silences: Iterable[Silence], stops: Sequence[Stop]) -> list[Silence]:
    """The silences that are not a stopped orchestrator: a gap that begins while it is stopped (at its
    recorded stop, or at a straggling log line after it) is the stop, not an outage."""
    return [s for s in silences if s.start is None or not any(stop.covers(s.start) for stop in stops)]


def stop_line(stop: Stop) -> str:
    """`stopped at 17:35:31 (orchestrator down); not started again since`, for the head of a report."""
    line = f"Orchestrator stopped at {clock(stop.at)} ({stop.reason})"
    if stop.until is not None:
        return line + f"; started again at {clock(stop.until)}"
    return line + "; not started again since, so its quiet after that is no outage"


@dataclass(frozen=True)
class DatabaseOutage:
    """The database was out of reach from `at` to `until`; the orchestrator waited and decided nothing."""

    at: datetime
    until: datetime | None
    reason: str
    holder: str
    details: dict[str, Any]

    @property
    def seconds(self) -> float | None:
        return None if self.until is None else max(0.0, (self.until - self.at).total_seconds())

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "until": iso(self.until),
            "seconds": None if self.seconds is None else round(self.seconds, 1),
            "reason": self.reason,
            "holder": self.holder,
            "attempts": self.details.get("attempts"),
            "waited": list(self.details.get("waited") or []),
        }


def outages_of(events: Iterable[OrchestratorEvent]) -> list[DatabaseOutage]:
    """The recorded database outages, oldest first."""
    return [
        DatabaseOutage(at=e.at, until=e.ended_at, reason=e.reason, holder=e.holder, details=dict(e.details))
        for e in sorted(events, key=lambda e: (e.at, e.id))
        if e.kind is OrchestratorEventKind.DATABASE_OUTAGE
    ]


def without_outages(
    silences: Iterable[Silence], outages: Sequence[DatabaseOutage], threshold_s: float
) -> list[Silence]:
    """The silences that are not a database outage: a gap that lies within one, give or take the
    silence threshold (the last signal before it and the first after), is the outage, not a silence."""
    margin = timedelta(seconds=threshold_s)
    kept = []
    for silence in silences:
        explained = any(
            o.until is not None
            and silence.start is not None
            and silence.end is not None
            and o.at - margin <= silence.start
            and silence.end <= o.until + margin
            for o in outages
        )
        if not explained:
            kept.append(silence)
    return kept


def outage_line(outage: DatabaseOutage) -> str:
    """`Database unreachable from 17:35:31 to 17:36:02 (31 s, 12 attempts): ...`, for the head of a report."""
    span = f"from {clock(outage.at)}" + (f" to {clock(outage.until)}" if outage.until is not None else "")
    if outage.seconds is not None:
        attempts = outage.details.get("attempts")
        span += f" ({format_duration(outage.seconds)}" + (f", {attempts} attempts)" if attempts else ")")
    line = (
        f"Database unreachable {span}: the orchestrator waited and decided nothing meanwhile "
        "(no silence, no worker lost for it)"
    )
    waited = outage.details.get("waited") or []
    if waited:
        line += "; waited: " + "; ".join(str(w) for w in waited)
    return line
