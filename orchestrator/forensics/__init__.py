"""Builds `orchestrator explain`'s answers from database rows: pure, no I/O, no clock reads.

The questions are the ones the 17:55 incident could not answer (see the seed's forensic report):
why was this worker started, why was it stopped, and was the orchestrator alive at all. Each answer
is a plain data structure (`AtReport`, `WorkerReport`, `TimelineReport`) with a `to_json()` for
machines and a `render_*` function for people, so the formatting is unit-tested on rows built by
hand and the command itself only fetches rows (`orchestrator.explain_queries`).

One module per job: `timeparse` reads the times people type, `silences` turns the database's gaps
between orchestrator signals into silences, `wording` and `formatting` are shared by the three
reports, and `at_report`, `worker_report` and `timeline` build and render one report each.
"""

from __future__ import annotations

from orchestrator.forensics.at_report import AtReport, build_at_report, render_at
from orchestrator.forensics.formatting import format_duration, trace_id_of
from orchestrator.forensics.silences import (
    DatabaseOutage,
    Gap,
    Silence,
    Stop,
    gaps_of,
    outages_of,
    silences_from_gaps,
    stops_of,
)
from orchestrator.forensics.timeline import TimelineEntry, TimelineReport, build_timeline, render_timeline
from orchestrator.forensics.timeparse import TimeParseError, parse_time
from orchestrator.forensics.wording import is_note
from orchestrator.forensics.worker_report import WorkerReport, build_worker_report, render_worker

__all__ = [
    "AtReport",
    "DatabaseOutage",
    "Gap",
    "Report",
    "Silence",
    "Stop",
    "TimeParseError",
    "TimelineEntry",
    "TimelineReport",
    "WorkerReport",
    "build_at_report",
    "build_timeline",
    "build_worker_report",
    "format_duration",
    "gaps_of",
    "is_note",
    "outages_of",
    "parse_time",
    "render",
    "render_at",
    "render_timeline",
    "render_worker",
    "silences_from_gaps",
    "stops_of",
    "trace_id_of",
]

Report = AtReport | WorkerReport | TimelineReport  # one answer of `orchestrator explain`


def render(report: Report) -> str:
    """Any of the three reports, for people."""
    if isinstance(report, AtReport):
        return render_at(report)
    if isinstance(report, WorkerReport):
        return render_worker(report)
    return render_timeline(report)
