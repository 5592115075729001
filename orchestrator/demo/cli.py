"""The `orchestrator demo` command: options, the run from start to summary, signals, final words.

SIGTERM stops the run like Ctrl-C; while everything is being stopped a second Ctrl-C is ignored,
so neither can leave Ray, pods or Postgres behind. The exit code is 0 when every task finished,
1 when some did not (or the run failed, or the database stayed unreachable longer than
`database.outage_limit_s`), 130 after an interrupt, 2 for a bad trace or config. A shorter database
outage is waited out and costs its own length, nothing more.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from orchestrator.demo import compression, replay, runtime, summary, view
from sim import trace as sim_trace

__all__ = ["command"]


class _Stop(Exception):
    """SIGTERM: stop like Ctrl-C."""


def _load(path: Path) -> list[sim_trace.TraceTask]:
    """The trace's tasks; a TraceError (a ValueError) says what is wrong with the file."""
    try:
        rows = sim_trace.load_trace(path)
    except OSError as exc:
        raise sim_trace.TraceError(f"trace {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise sim_trace.TraceError(f"trace {path}: has no rows")
    return rows


def command(
    trace: Annotated[
        Path, typer.Option("--trace", help="Workload CSV: arrival_s,task_type,user_id,duration_s[,depends_on].")
    ] = compression.DEFAULT_TRACE,
    speed: Annotated[
        float | None,
        typer.Option("--speed", min=1.0, help="Time compression (default: fit the trace into --duration)."),
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", min=5.0, max=3600.0, help="Seconds the demo should take, about.")
    ] = 120.0,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Where the database, spool and pod logs stay afterwards.")
    ] = Path(".orchestrator"),
    plain: Annotated[
        bool, typer.Option("--plain", help="One status line every few seconds instead of the live view.")
    ] = False,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="native: our own queue and worker. reigh: a Reigh app's queue (built from a fixture, or the "
            "DATABASE_URL database) and a stand-in of its unchanged Headless-Wan2GP worker.",
        ),
    ] = "native",
) -> None:
    """Run the whole system locally on a replayed workload, show it live, then summarize (about 2 min)."""
    from rich.console import Console

    console = Console()
    live_ok = console.is_terminal and not plain

    def say(message: str) -> None:
        console.print(f"[dim]demo:[/dim] {message}", highlight=False, soft_wrap=True)  # commands stay copyable

    try:
        rows = _load(trace)
    except ValueError as exc:
        typer.echo(f"orchestrator demo: {exc}", err=True)
        raise typer.Exit(2) from None
    from config import ConfigError, load_settings

    if profile not in ("native", "reigh"):
        typer.echo(f"orchestrator demo: --profile {profile!r} is not one of native, reigh", err=True)
        raise typer.Exit(2)
    factor = speed or compression.fit_speed(rows, duration)
    use_database_url = bool(os.environ.get("DATABASE_URL"))
    try:
        settings = load_settings(
            overrides=compression.demo_overrides(state_dir, factor, profile=profile, use_database_url=use_database_url)
        )
    except ConfigError as exc:
        typer.echo("orchestrator demo: " + "; ".join(exc.problems), err=True)
        raise typer.Exit(2) from None
    run = runtime.Runtime(settings)
    workload = replay.Replay(rows, factor)
    watcher = view.View(run, workload, trace_name=trace.name, speed=factor, duration_s=duration)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    code = 0
    example_worker: str | None = None
    try:
        run.start(say)
        if settings.queue.profile.value == "reigh":
            assert run.conninfo is not None
            workload.use(replay.ReighApp(run.conninfo, settings.queue.run_type))
        watcher.count_earlier_tasks()
        say(f"replaying {len(rows)} tasks of {trace.name} at {factor:g}x; Ctrl-C stops cleanly")
        replayer = threading.Thread(
            target=workload.run, args=(run.require_store(), run.t0), name="demo-replay", daemon=True
        )
        replayer.start()
        code = watcher.watch(console, live_ok, say)
        result = summary.of_run(run.require_store(), run.started_at, factor)
        console.print()
        console.print("[bold]Summary[/bold]")
        for line in result.lines():
            console.print("  " + line, highlight=False, soft_wrap=True)
        console.print(
            "  fleet size:   "
            + view.sparkline(watcher.fleet_history, settings.scaling.max_workers)
            + "  (one mark a second; _ = no worker)",
            highlight=False,
            soft_wrap=True,
        )
        example_worker = summary.example_worker(run.store, run.started_at)
        if result.tasks_unfinished or workload.error:
            code = 1
    except view.OutageTooLong as exc:
        say(f"stopping: {exc}")
        run.stop_reason = "demo gave up: the database was unreachable too long"
        code = 1
    except (KeyboardInterrupt, _Stop) as exc:
        say("interrupted: stopping everything ...")
        run.stop_reason = "demo interrupted by " + ("SIGTERM" if isinstance(exc, _Stop) else "Ctrl-C")
        code = 130
    except Exception as exc:
        from store.errors import redact

        say(f"failed: {redact(f'{type(exc).__name__}: {exc}')}")
        run.stop_reason = f"demo failed ({type(exc).__name__})"
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        with _ignore_sigint():
            workload.stop()
            run.cleanup(say)
    state = Path(settings.state_dir)
    exe = _orchestrator_command()
    if settings.queue.profile.value == "reigh" or use_database_url:
        where = [f"ORCHESTRATOR_QUEUE__PROFILE={settings.queue.profile.value}"]
        if use_database_url:
            where.append("ORCHESTRATOR_DATABASE__BACKEND=postgres")
        else:
            where.append(f"ORCHESTRATOR_DATABASE__EMBEDDED_DIR={settings.database.embedded_dir}")
        exe = " ".join([*where, exe])
    since = run.started_at.strftime("%H:%M")
    console.print(
        f"\nThe database stays in {state}. Ask it what happened (it works with everything stopped):\n"
        f"  {exe} status                        # the last decision and every worker\n"
        f"  {exe} explain --since {since}           # timeline: spawns, promotions, drains, and why\n"
        f"  {exe} explain --worker {example_worker or '<worker id>'}"
        "   # one worker's life: why it was started, why it was stopped",
        highlight=False,
        soft_wrap=True,  # commands must stay copyable, also in a narrow or non-terminal output
    )
    raise typer.Exit(code)


def _orchestrator_command() -> str:
    """How the user can run `orchestrator` again: the script they ran, relative to here if it can be."""
    import os
    import shutil
    import sys

    argv0 = Path(sys.argv[0])
    if argv0.name == "orchestrator" and argv0.exists():
        try:
            return str(argv0.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            pass
        on_path = shutil.which("orchestrator")
        if on_path and os.path.samefile(on_path, argv0):
            return "orchestrator"
        return str(argv0)
    return "orchestrator"


@contextlib.contextmanager
def _ignore_sigint() -> Iterator[None]:
    """A second Ctrl-C during cleanup must not leave pods or Ray behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
