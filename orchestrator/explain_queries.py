"""explain's queries: the rows each question needs, read through the Store, built into a report.

Every question is a handful of indexed time-window queries (the Store's list_* plus its two
explain reads, `explain_silences` and `worker_tasks`), so it answers in well under two seconds on
a month of history (bench/explain_speed.py). Building and wording the answers is in
`orchestrator.forensics`, which is pure; the command line is `orchestrator.explain`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import TypeVar

from orchestrator import forensics
from store.base import OrchestratorEvent, Store, StoreError, WorkerEvent

__all__ = ["ExplainError", "explain_at", "explain_timeline", "explain_worker", "resolve_time"]

_T = TypeVar("_T")

# Longest lookback when a bare time (17:55) is resolved to the most recent day with data then.
_MAX_DAY_JUMPS = 400
# How far before a window explain looks for each worker's previous transition (to measure the
# first phase in the window); a phase that began earlier shows no duration.
_HISTORY_LOOKBACK = timedelta(hours=6)


class ExplainError(Exception):
    """Bad input or an unreachable database: one line for the user, exit 2."""


# --------------------------------------------------------------------------------------------
# time resolution


def _has_data(store: Store, since: datetime, until: datetime) -> bool:
    return bool(
        store.list_worker_events(since=since, until=until, limit=1)
        or store.list_decisions(since=since, until=until, limit=1)
        or store.list_system_logs(since=since, until=until, limit=1)
    )


def _latest_before(store: Store, until: datetime) -> datetime | None:
    found = [
        *(e.at for e in store.list_worker_events(until=until, limit=1)),
        *(d.at for d in store.list_decisions(until=until, limit=1) if d.at),
        *(r.at for r in store.list_system_logs(until=until, limit=1)),
    ]
    return max(found) if found else None


def resolve_time(
    store: Store, text: str, *, now: datetime, window: timedelta, near: datetime | None = None
) -> datetime:
    """A user's time as a UTC timestamp. A bare time of day means: on `near`'s day when given,
    else the most recent day that has data within `window` of that time, else today."""
    try:
        stamp, time_of_day = forensics.parse_time(text, now=now)
    except forensics.TimeParseError as exc:
        raise ExplainError(str(exc)) from None
    if stamp is not None:
        return stamp
    assert time_of_day is not None
    if near is not None:
        candidate = datetime.combine(near.date(), time_of_day, tzinfo=UTC)
        return candidate if candidate > near else candidate + timedelta(days=1)
    return _most_recent_day_with_data(store, time_of_day, now=now, window=window)


def _most_recent_day_with_data(store: Store, time_of_day: time, *, now: datetime, window: timedelta) -> datetime:
    today = datetime.combine(now.date(), time_of_day, tzinfo=UTC)
    if today - window > now:
        today -= timedelta(days=1)
    candidate = today
    for _ in range(_MAX_DAY_JUMPS):
        if _has_data(store, candidate - window, candidate + window):
            return candidate
        latest = _latest_before(store, candidate - window)
        if latest is None:
            break
        # Jump straight to the day of the latest data before this candidate.
        candidate = datetime.combine(latest.date(), time_of_day, tzinfo=UTC)
        if candidate - window > latest:
            candidate -= timedelta(days=1)
    return today


# --------------------------------------------------------------------------------------------
# queries


def _migrated(store: Store, fn: str, read: Callable[[], _T]) -> _T:
    """Run one of explain's own reads; a database that lacks its SQL function asks for a migration."""
    try:
        return read()
    except StoreError as exc:
        if "does not exist" in str(exc) or "Could not find the function" in str(exc):
            raise ExplainError(
                f"the database at {store.describe()} lacks {fn}(): run `orchestrator migrate` to add it"
            ) from None
        raise


def _gaps(store: Store, since: datetime, until: datetime, threshold_s: float) -> list[forensics.Gap]:
    """The intervals between orchestrator signals around [since, until], computed in the database."""
    signals = _migrated(store, "explain_silences", lambda: store.explain_silences(since, until, threshold_s))
    return forensics.gaps_of(signals)


def _runs(store: Store, since: datetime, until: datetime) -> list[OrchestratorEvent]:
    """The orchestrator's recorded starts and stops in the window, and the last one before it (a stop
    before the window may still hold at its start)."""

    def read() -> list[OrchestratorEvent]:
        return [
            *store.list_orchestrator_events(until=since, limit=1),
            *store.list_orchestrator_events(since=since, until=until, limit=10_000),
        ]

    return _migrated(store, "list_orchestrator_events", read)


def _previous_history(store: Store, events: list[WorkerEvent], since: datetime) -> list[WorkerEvent]:
    """The transitions just before the window, so the first in-window phase of a worker is measured
    from its real start: one indexed query over a lookback, not one query per worker."""
    if not events:
        return []
    return store.list_worker_events(since=since - _HISTORY_LOOKBACK, until=since, limit=50_000)


def explain_at(
    store: Store, at: datetime, *, window: timedelta, cycle_interval_s: float, threshold_s: float, now: datetime
) -> forensics.AtReport:
    since, until = at - window, at + window
    decisions = store.list_decisions(since=since, until=until, limit=10_000)
    # A little past the window, to show what a decision near its end caused.
    events = store.list_worker_events(since=since, until=until + window, limit=50_000)
    before = store.list_decisions(until=since, limit=1)
    return forensics.build_at_report(
        at=at,
        since=since,
        until=until,
        decisions=decisions,
        events=events,
        history=_previous_history(store, events, since),
        gaps=_gaps(store, since, min(until, now), threshold_s),
        cycle_interval_s=cycle_interval_s,
        threshold_s=threshold_s,
        last_decision_before=before[-1] if before else None,
        silence_until=now,
        runs=_runs(store, since, until),
    )


def explain_timeline(
    store: Store,
    since: datetime,
    until: datetime,
    *,
    cycle_interval_s: float,
    threshold_s: float,
    now: datetime,
    all_decisions: bool = False,
) -> forensics.TimelineReport:
    decisions = store.list_decisions(since=since, until=until, limit=100_000)
    events = store.list_worker_events(since=since, until=until, limit=200_000)
    return forensics.build_timeline(
        since=since,
        until=until,
        decisions=decisions,
        events=events,
        history=_previous_history(store, events, since),
        gaps=_gaps(store, since, min(until, now), threshold_s),
        cycle_interval_s=cycle_interval_s,
        threshold_s=threshold_s,
        decisions_without_change=all_decisions,
        silence_until=now,
        runs=_runs(store, since, until),
    )


def explain_worker(store: Store, worker_id: str, *, cycle_interval_s: float, now: datetime) -> forensics.WorkerReport:
    worker = store.get_worker(worker_id)
    if worker is None:
        raise ExplainError(f"unknown worker id {worker_id!r}: no such row in workers ({store.describe()})")
    events = store.list_worker_events(worker_id=worker_id, limit=100_000)
    tasks = _migrated(store, "explain_worker_tasks", lambda: store.worker_tasks(worker_id))
    # The decision that spawned it is written just before its row; the one that drained it just
    # before its draining transition. A few cycles either side finds them by index.
    margin = timedelta(seconds=max(60.0, 3 * cycle_interval_s))
    decisions = store.list_decisions(since=worker.created_at - margin, until=worker.created_at + margin, limit=1000)
    # With the warm pool a worker can be drained, resumed and drained again, and a stopped one
    # retired: every such move has its decision just before it.
    acted = [
        e for e in events if e.to_status in ("draining", "resuming", "terminating") and e.from_status != e.to_status
    ]
    for event in acted:
        decisions += store.list_decisions(since=event.at - margin, until=event.at + timedelta(seconds=5), limit=1000)
    return forensics.build_worker_report(worker=worker, events=events, tasks=tasks, decisions=decisions, now=now)
