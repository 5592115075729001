"""`orchestrator explain`: why a worker was started or stopped, and whether the orchestrator was alive.

It reads only the database (decisions, worker rows and transitions, the orchestrator's log rows),
so it works when the orchestrator is down. This module is the command line: options, opening the
store, printing. The queries are in `orchestrator.explain_queries`; building and wording the
answers in `orchestrator.forensics`, which is pure.

Bad input (an unknown worker, a time it cannot read, a database it cannot reach) prints one line
naming the value and exits 2: no traceback, no secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator import forensics
from orchestrator.explain_queries import ExplainError, explain_at, explain_timeline, explain_worker, resolve_time
from store.base import RetentionWindow, Store, StoreError

if TYPE_CHECKING:
    from config import OrchestratorSettings

__all__ = ["command"]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"orchestrator explain: {message}", err=True)
    return typer.Exit(2)


def _open(config: Path | None) -> tuple[OrchestratorSettings, Store, Callable[[], None]]:
    """(settings, store, close) for the configured database; the embedded one must already exist."""
    from config import ConfigError, load_settings
    from config.settings import DatabaseBackend

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        raise ExplainError("; ".join(exc.problems)) from None
    from store.factory import one_shot_store

    database = settings.database
    if database.backend is DatabaseBackend.EMBEDDED:
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
    until: Annotated[str | None, typer.Option("--until", help="Timeline to this time (default: now).")] = None,
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
        report: forensics.Report
        asked_from: datetime | None = None  # the earliest time the question is about, if any
        if worker:
            report = explain_worker(store, worker.strip(), cycle_interval_s=cycle, now=now)
        elif at:
            moment = resolve_time(store, at, now=now, window=span)
            asked_from = moment - span
            report = explain_at(store, moment, window=span, cycle_interval_s=cycle, threshold_s=threshold, now=now)
        else:
            assert since is not None
            start = resolve_time(store, since, now=now, window=timedelta(hours=1))
            end = resolve_time(store, until, now=now, window=span, near=start) if until else now
            asked_from = start
            if end <= start:
                raise ExplainError(
                    f"--until {until!r} is not after --since {since!r}"
                    if until
                    else f"--since {since!r} is not before now ({now:%Y-%m-%d %H:%M:%S} UTC)"
                )
            report = explain_timeline(
                store, start, end, cycle_interval_s=cycle, threshold_s=threshold, now=now, all_decisions=all_decisions
            )
        windows = store.retention_windows()
        if as_json:
            retained = [w.model_dump(mode="json") for w in windows]
            typer.echo(
                json.dumps(
                    {"database": store.describe(), "retained": retained, **report.to_json()}, indent=2, default=str
                )
            )
        else:
            typer.echo(f"database: {store.describe()}")
            typer.echo(_retention_text(windows, asked_from))
            typer.echo(forensics.render(report).rstrip())
    except ExplainError as exc:
        raise _fail(str(exc)) from None
    except typer.Exit:
        raise
    except Exception as exc:  # a store error or a bug: one line, never a traceback or a secret
        from store.errors import redact

        kind = "" if isinstance(exc, StoreError) else f"{type(exc).__name__}: "
        raise _fail(redact(f"{kind}{exc}")) from None
    finally:
        try:
            close()
        except Exception as exc:  # stopping the embedded server must not mask the answer
            typer.echo(f"orchestrator explain: could not stop the embedded database: {exc}", err=True)


def _retention_text(windows: list[RetentionWindow], asked_from: datetime | None) -> str:
    """Where the retained window starts (settings.retention; the Scaler deletes older rows), and a
    warning when the question reaches before it: what happened then is no longer on record."""
    if not windows:
        return "retained: everything so far (retention has not run on this database)"
    line = "retained: " + ", ".join(f"{w.target} since {w.cutoff:%Y-%m-%d %H:%M} UTC" for w in windows)
    cut = [w for w in windows if asked_from is not None and w.cutoff > asked_from]
    if cut and asked_from is not None:
        line += (
            f"\nnote: {asked_from:%Y-%m-%d %H:%M:%S} UTC is before the retained window of "
            + ", ".join(w.target for w in cut)
            + ": what happened then has been deleted, and silence there is no evidence"
        )
    return line
