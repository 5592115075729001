"""`orchestrator explain`: why a worker was started or stopped, and whether the orchestrator was alive.

It reads only the database (decisions, worker rows and transitions, the orchestrator's log rows),
so it works when the orchestrator is down. Every question is a handful of indexed time-window
queries (store/migrations/0900_explain.sql adds the two it needs beyond the Store's list_*), so
it answers in well under two seconds on a month of history (bench/explain_speed.py). Building and
formatting the answers is in `orchestrator.forensics`, which is pure.

Bad input (an unknown worker, a time it cannot read, a database it cannot reach) prints one line
naming the value and exits 2: no traceback, no secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator import forensics

__all__ = ["ExplainError", "command", "explain_at", "explain_timeline", "explain_worker", "resolve_time"]

# Longest lookback when a bare time (17:55) is resolved to the most recent day with data then.
_MAX_DAY_JUMPS = 400
# How far before a window explain looks for each worker's previous transition (to measure the
# first phase in the window); a phase that began earlier shows no duration.
_HISTORY_LOOKBACK = timedelta(hours=6)


class ExplainError(Exception):
    """Bad input or an unreachable database: one line for the user, exit 2."""


# --------------------------------------------------------------------------------------------
# time resolution


def _has_data(store: Any, since: datetime, until: datetime) -> bool:
    return bool(
        store.list_worker_events(since=since, until=until, limit=1)
        or store.list_decisions(since=since, until=until, limit=1)
        or store.list_system_logs(since=since, until=until, limit=1)
    )


def _latest_before(store: Any, until: datetime) -> datetime | None:
    found = [
        *(e.at for e in store.list_worker_events(until=until, limit=1)),
        *(d.at for d in store.list_decisions(until=until, limit=1) if d.at),
        *(r.at for r in store.list_system_logs(until=until, limit=1)),
    ]
    return max(found) if found else None


def resolve_time(store: Any, text: str, *, now: datetime, window: timedelta, near: datetime | None = None) -> datetime:
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


def _most_recent_day_with_data(store: Any, time_of_day: time, *, now: datetime, window: timedelta) -> datetime:
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


def _call(store: Any, fn: str, args: dict[str, Any]) -> Any:
    """One of 0900_explain.sql's functions, through the store's own transport (Postgres or Supabase)."""
    transport: Callable[..., Any] | None = getattr(store, "_call", None)
    if transport is None:
        raise ExplainError(f"the store {store.describe()} cannot run explain's queries")
    from store.base import StoreError

    try:
        return transport(fn, args, safe=True)
    except StoreError as exc:
        if "does not exist" in str(exc) or "Could not find the function" in str(exc):
            raise ExplainError(
                f"the database at {store.describe()} lacks {fn}(): run `orchestrator migrate` to add it"
            ) from None
        raise


def _parse_ts(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _gaps(store: Any, since: datetime, until: datetime, threshold_s: float) -> list[forensics.Gap]:
    """The intervals between orchestrator signals around [since, until], computed in the database."""
    answer = _call(store, "explain_silences", {"p_since": since, "p_until": until, "p_threshold_s": threshold_s})
    gaps: list[forensics.Gap] = [(_parse_ts(g["start"]), _parse_ts(g["end"])) for g in answer["gaps"]]
    last_before = _parse_ts(answer.get("last_before"))
    first_after = _parse_ts(answer.get("first_after"))
    last_inside = _parse_ts(answer.get("last_inside"))
    last = last_inside or last_before
    if last is None and first_after is None:
        return [(None, None)]  # nothing from the orchestrator, ever, up to the window's end
    if first_after is None and last is not None:
        gaps.append((last, None))  # silent to the end of the window (so far)
    return gaps


def _previous_history(store: Any, events: list[Any], since: datetime) -> list[Any]:
    """The transitions just before the window, so the first in-window phase of a worker is measured
    from its real start: one indexed query over a lookback, not one query per worker."""
    if not events:
        return []
    return store.list_worker_events(since=since - _HISTORY_LOOKBACK, until=since, limit=50_000)


def explain_at(
    store: Any, at: datetime, *, window: timedelta, cycle_interval_s: float, threshold_s: float, now: datetime
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
    )


def explain_timeline(
    store: Any,
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
    )


def explain_worker(store: Any, worker_id: str, *, cycle_interval_s: float, now: datetime) -> forensics.WorkerReport:
    from store.base import TaskRow

    worker = store.get_worker(worker_id)
    if worker is None:
        raise ExplainError(f"unknown worker id {worker_id!r}: no such row in workers ({store.describe()})")
    events = store.list_worker_events(worker_id=worker_id, limit=100_000)
    tasks = [TaskRow.model_validate(t) for t in _call(store, "explain_worker_tasks", {"p_worker_id": worker_id})]
    # The decision that spawned it is written just before its row; the one that drained it just
    # before its draining transition. A few cycles either side finds them by index.
    margin = timedelta(seconds=max(60.0, 3 * cycle_interval_s))
    decisions = store.list_decisions(since=worker.created_at - margin, until=worker.created_at + margin, limit=1000)
    stop = next((e for e in events if e.to_status in ("draining", "terminating")), None)
    if stop is not None:
        decisions += store.list_decisions(since=stop.at - margin, until=stop.at + timedelta(seconds=5), limit=1000)
    return forensics.build_worker_report(worker=worker, events=events, tasks=tasks, decisions=decisions, now=now)


# --------------------------------------------------------------------------------------------
# the command


def _fail(message: str) -> typer.Exit:
    typer.echo(f"orchestrator explain: {message}", err=True)
    return typer.Exit(2)


def _open(config: Path | None) -> tuple[Any, Any, Callable[[], None]]:
    """(settings, store, close) for the configured database; the embedded one must already exist."""
    from config import ConfigError, load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise ExplainError("; ".join(exc.problems)) from None
    from store.base import StoreError
    from store.factory import one_shot_store

    database = settings.database
    if database.backend == "embedded":
        pgdata = Path(database.embedded_dir).expanduser()
        if not (pgdata / "PG_VERSION").exists():
            raise ExplainError(
                f"no database in {pgdata}: run `orchestrator demo` first, or point at one with "
                "DATABASE_URL or --config FILE"
            )
    session = ExitStack()
    try:
        store = session.enter_context(one_shot_store(settings))
    except StoreError as exc:
        raise ExplainError(str(exc)) from None
    close = session.close
    return settings, store, close


def command(
    at: Annotated[
        str | None,
        typer.Option("--at", help="Decisions around this time: 17:55, 17:55:06, 2025-10-16T17:55:00Z, or 90m (ago)."),
    ] = None,
    worker: Annotated[str | None, typer.Option("--worker", help="One worker's whole life, by id.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Timeline from this time.")] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Timeline to this time (default: an hour after --since).")
    ] = None,
    window: Annotated[float, typer.Option("--window", min=0.1, max=1440, help="Minutes either side of --at.")] = 5.0,
    silence_threshold: Annotated[
        float | None,
        typer.Option(
            "--silence-threshold",
            min=0.1,
            help="Seconds without a decision or log that count as silence (default: twice scaling.cycle_interval_s).",
        ),
    ] = None,
    all_decisions: Annotated[
        bool, typer.Option("--all-decisions", help="Timeline: include decisions that changed nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config naming the database (default: $ORCHESTRATOR_CONFIG).")
    ] = None,
) -> None:
    """Why was this worker started or stopped, and was the orchestrator alive? Reads only the database.

    All times are UTC. A bare time (17:55) means that time on the most recent day with data then.
    """
    modes = [name for name, value in (("--at", at), ("--worker", worker), ("--since", since)) if value]
    if len(modes) != 1:
        given = " and ".join(modes) if modes else "none"
        raise _fail(f"give exactly one of --at TIME, --worker ID or --since TIME (given: {given})")
    if until and not since:
        raise _fail("--until needs --since")
    close: Callable[[], None] = lambda: None  # noqa: E731
    try:
        settings, store, close = _open(config)
        cycle = settings.scaling.cycle_interval_s
        threshold = silence_threshold if silence_threshold is not None else 2 * cycle
        now = store.now()
        span = timedelta(minutes=window)
        report: Any
        if worker:
            report = explain_worker(store, worker.strip(), cycle_interval_s=cycle, now=now)
            text = forensics.render_worker
        elif at:
            moment = resolve_time(store, at, now=now, window=span)
            report = explain_at(store, moment, window=span, cycle_interval_s=cycle, threshold_s=threshold, now=now)
            text = forensics.render_at
        else:
            assert since is not None
            start = resolve_time(store, since, now=now, window=timedelta(hours=1))
            end = resolve_time(store, until, now=now, window=span, near=start) if until else start + timedelta(hours=1)
            if end <= start:
                raise ExplainError(f"--until {until!r} is not after --since {since!r}")
            report = explain_timeline(
                store, start, end, cycle_interval_s=cycle, threshold_s=threshold, now=now, all_decisions=all_decisions
            )
            text = forensics.render_timeline
        if as_json:
            typer.echo(json.dumps({"database": store.describe(), **report.to_json()}, indent=2, default=str))
        else:
            typer.echo(f"database: {store.describe()}")
            typer.echo(text(report).rstrip())
    except ExplainError as exc:
        raise _fail(str(exc)) from None
    except typer.Exit:
        raise
    except Exception as exc:  # a store error or a bug: one line, never a traceback or a secret
        from store.base import StoreError
        from store.errors import redact

        kind = "" if isinstance(exc, StoreError) else f"{type(exc).__name__}: "
        raise _fail(redact(f"{kind}{exc}")) from None
    finally:
        try:
            close()
        except Exception as exc:  # stopping the embedded server must not mask the answer
            typer.echo(f"orchestrator explain: could not stop the embedded database: {exc}", err=True)
