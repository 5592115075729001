"""`orchestrator demo` (what `make demo` runs): the whole system on one machine, in about two minutes.

An embedded Postgres in `.orchestrator/pgdata`, a local Ray head started for the demo (dashboard
on), the Scaler and LogShipper actors, LocalProvider pods running the reference worker, and a
workload replayed from a trace CSV with time compressed so it ends in about `--duration` seconds.
A live view shows tasks, workers, the last decision and LogShipper health while it runs; a
summary follows. The database stays in `.orchestrator/` for `orchestrator explain` and `status`;
every process the demo started (Ray, actors, pods, Postgres) is stopped, also on Ctrl-C.

Trace time is compressed by `--speed` (default: fit the trace into `--duration`): task durations
and gaps between arrivals shrink, and so do the policy's time knobs (idle timeout, scale-down
stabilization, drain timeout: their production defaults divided by the speed, with floors of a
few Scaler cycles). Pod boot time does not shrink (it is real, about 5-10 s here), and the policy
keeps an idle worker at least one measured boot time while work keeps arriving (the ski-rental
rule), so a trace only shows the fleet going back down if its quiet gaps, compressed, are longer
than about two boot times. The default trace, `bench/traces/demo.csv`, is made for that: three
bursts (6, 2 and 6 tasks) with quiet gaps, so in two minutes the fleet goes up to 4, down to 0, up
to 2, down, up to 4 and down. `bursty.csv` (a six-hour day) compressed into two minutes has gaps of
about 9 s, under two boot times, so there the fleet rightly stays up until the end.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import signal
import statistics
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["DemoResult", "TraceRow", "command", "demo_overrides", "load_trace", "summarize"]

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = PROJECT_ROOT / "bench" / "traces" / "demo.csv"
# Share of --duration given to replaying the trace; the rest lets the fleet finish and scale down.
_REPLAY_SHARE = 0.75
# Slowest a compressed task may be made to run (s): keeps a too-low --speed from stalling the demo.
_MIN_TASK_S = 0.05
_POLL_S = 0.5  # live view refresh


@dataclass(frozen=True)
class TraceRow:
    arrival_s: float
    task_type: str
    user_id: str
    duration_s: float
    depends_on: int | None  # 0-based row index of the parent


def load_trace(path: Path) -> list[TraceRow]:
    """Rows of a trace CSV (arrival_s,task_type,user_id,duration_s[,depends_on]), by arrival."""
    try:
        with open(path, newline="") as fh:
            rows = [
                TraceRow(
                    arrival_s=float(r["arrival_s"]),
                    task_type=r["task_type"],
                    user_id=r["user_id"],
                    duration_s=float(r["duration_s"]),
                    depends_on=int(r["depends_on"]) if r.get("depends_on") not in (None, "") else None,
                )
                for r in csv.DictReader(fh)
            ]
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"trace {path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not rows:
        raise ValueError(f"trace {path}: has no rows")
    return rows


def fit_speed(rows: list[TraceRow], duration_s: float) -> float:
    """The compression that replays the trace (first arrival to last finish) in the replay share."""
    first = min(r.arrival_s for r in rows)
    end = max(r.arrival_s + r.duration_s for r in rows)
    return max(1.0, (end - first) / max(1.0, duration_s * _REPLAY_SHARE))


# The demo's Scaler cycle (s); time knobs are never made shorter than a few cycles.
_DEMO_CYCLE_S = 1.0


def _compressed(production_s: float, speed: float, floor_s: float) -> float:
    """A production time knob in demo time: divided by the speed, never below `floor_s`."""
    return round(max(floor_s, production_s / speed), 1)


def demo_overrides(state_dir: Path, speed: float = 30.0) -> dict[str, Any]:
    """Settings for a fast, local demo: absolute paths under `state_dir`, quick cycles, and the
    policy's time knobs compressed by `speed` like the trace (see the module docstring)."""
    from config.settings import ScalingSettings

    state = state_dir.resolve()
    prod = ScalingSettings()
    return {
        "state_dir": str(state),
        "lease_ttl_s": 10.0,
        "database": {"url": None, "supabase_url": None, "embedded_dir": str(state / "pgdata")},
        # Pods are local processes: their boot (Python, imports, first heartbeat) is real, ~5 s.
        "provider": {"kind": "local", "local_boot_delay_s": 1.0},
        "scaling": {
            "min_workers": 0,
            "max_workers": 4,
            "cycle_interval_s": _DEMO_CYCLE_S,
            "spawn_timeout_s": 60.0,
            "heartbeat_interval_s": 1.0,
            "heartbeat_timeout_s": 15.0,
            "idle_timeout_s": _compressed(prod.idle_timeout_s, speed, 3 * _DEMO_CYCLE_S),
            "drain_timeout_s": _compressed(prod.drain_timeout_s, speed, 10 * _DEMO_CYCLE_S),
            "scale_down_stabilization_s": _compressed(prod.scale_down_stabilization_s, speed, 2 * _DEMO_CYCLE_S),
            # An expectation of a real boot, so not compressed; measured boots replace it at once.
            "default_boot_time_s": 6.0,
            "breaker_cooldown_s": _compressed(prod.breaker_cooldown_s, speed, 10 * _DEMO_CYCLE_S),
            # Else the breaker of one run counts the spawns of the runs before it.
            "failure_window_s": _compressed(prod.failure_window_s, speed, 30 * _DEMO_CYCLE_S),
        },
        "log_shipping": {
            "spool_dir": str(state / "spool"),
            "fallback_file": str(state / "logs" / "fallback.jsonl"),
            "dead_letter_file": str(state / "logs" / "dead-letter.jsonl"),
            "flush_interval_s": 0.5,
        },
        "worker": {"poll_interval_s": 0.2, "shutdown_grace_s": 5.0},
    }


# --------------------------------------------------------------------------------------------
# summary (pure)


@dataclass(frozen=True)
class DemoResult:
    tasks_total: int
    tasks_done: int
    tasks_failed: int
    tasks_unfinished: int
    spawns: int
    terminations: int
    billed_s: float
    busy_s: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    speed: float
    still_up: int = 0  # workers the scaler had not stopped when the run ended (the demo stops them)
    scale_downs: int = 0  # drains the scaler decided

    def lines(self) -> list[str]:
        utilization = f"{100 * self.busy_s / self.billed_s:.0f}%" if self.billed_s else "-"
        wait = (
            "-"
            if self.wait_p50_s is None
            else f"p50 {self.wait_p50_s:.1f} s, p95 {self.wait_p95_s:.1f} s "
            f"(trace time: p50 {self.wait_p50_s * self.speed:.0f} s, p95 {(self.wait_p95_s or 0) * self.speed:.0f} s)"
        )
        return [
            f"tasks:        {self.tasks_done}/{self.tasks_total} done, {self.tasks_failed} failed, "
            f"{self.tasks_unfinished} unfinished",
            f"fleet:        {self.spawns} spawns, {self.terminations} terminations "
            f"({self.scale_downs} drained by the scaler when idle"
            + (f"; {self.still_up} still up at the end, stopped by the demo)" if self.still_up else ")"),
            f"GPU-seconds:  {self.billed_s:.1f} billed vs {self.busy_s:.1f} busy "
            f"({utilization} utilization, demo time)",
            f"queue wait:   {wait}",
        ]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def summarize(tasks: list[Any], workers: list[Any], events: list[Any], *, now: datetime, speed: float) -> DemoResult:
    """Figures of one demo run from its rows (tasks, workers and worker_events created during it)."""
    done = [t for t in tasks if t.status == "Complete"]
    failed = [t for t in tasks if t.status in ("Failed", "Cancelled")]
    busy = sum((t.finished_at - t.claimed_at).total_seconds() for t in tasks if t.claimed_at and t.finished_at)
    billed = sum(((w.terminated_at or now) - w.created_at).total_seconds() for w in workers)
    waits = sorted((t.claimed_at - t.created_at).total_seconds() for t in tasks if t.claimed_at)
    return DemoResult(
        tasks_total=len(tasks),
        tasks_done=len(done),
        tasks_failed=len(failed),
        tasks_unfinished=len(tasks) - len(done) - len(failed),
        spawns=sum(1 for e in events if e.from_status is None),
        terminations=sum(1 for e in events if e.to_status == "terminated"),
        scale_downs=sum(1 for e in events if e.to_status == "draining"),
        still_up=sum(1 for w in workers if w.terminated_at is None and str(w.status) != "terminated"),
        billed_s=billed,
        busy_s=busy,
        wait_p50_s=_percentile(waits, 50),
        wait_p95_s=_percentile(waits, 95),
        speed=speed,
    )


# --------------------------------------------------------------------------------------------
# the run


class _Stop(Exception):
    """SIGTERM: stop like Ctrl-C."""


class Demo:
    """One run. `run()` returns the exit code; `cleanup()` always runs (also on Ctrl-C)."""

    def __init__(self, settings: Any, rows: list[TraceRow], *, trace_name: str, speed: float, duration_s: float):
        self.settings = settings
        self.rows = rows
        self.trace_name = trace_name
        self.speed = speed
        self.duration_s = duration_s
        self.store: Any = None
        self.ray_started = False
        self.dashboard_url: str | None = None
        self.scaler: Any = None
        self.shipper: Any = None
        self.started_at = datetime.now(UTC)
        self.t0 = time.monotonic()
        self.submitted = 0
        self.replay_error: str | None = None
        self.stop_replay = threading.Event()
        self.fleet_history: list[int] = []  # live workers, one sample a second
        self.longest_boot_s = 0.0  # longest measured spawning -> active of this run

    # --- start ---------------------------------------------------------------------------------
    def start(self, say: Any) -> None:
        from store.factory import open_store

        say(f"starting the embedded Postgres in {self.settings.database.embedded_dir} ...")
        self.store = open_store(self.settings)  # migrates the embedded database
        say("starting a local Ray head with the dashboard (about 7 s) ...")
        import ray

        context = ray.init(
            address="local",  # a Ray of the demo's own, never one already running on this machine
            num_cpus=2,
            include_dashboard=True,
            namespace=self.settings.ray.namespace,
            log_to_driver=False,
            configure_logging=False,
        )
        self.ray_started = True
        url = getattr(context, "dashboard_url", None)
        self.dashboard_url = f"http://{url}" if url and not url.startswith("http") else url
        say("starting the LogShipper and Scaler actors ...")
        self.shipper, self.scaler = _start_actors(self.settings)
        self.started_at = self.store.now()
        self.t0 = time.monotonic()

    # --- workload ------------------------------------------------------------------------------
    def replay(self) -> None:
        """Insert each trace row when its compressed arrival time comes (a thread)."""
        from store.base import NewTask

        try:
            first = min(r.arrival_s for r in self.rows)
            ids = [str(uuid.uuid4()) for _ in self.rows]
            order = sorted(range(len(self.rows)), key=lambda i: self.rows[i].arrival_s)
            pending: list[int] = []
            for i in order:
                due = (self.rows[i].arrival_s - first) / self.speed
                wait = due - (time.monotonic() - self.t0)
                if wait > 0 and pending:
                    self._insert(pending, ids, NewTask)
                    pending = []
                if wait > 0 and self.stop_replay.wait(wait):
                    return
                pending.append(i)
            if pending:
                self._insert(pending, ids, NewTask)
        except Exception as exc:  # shown in the view and the summary; the run goes on
            logger.exception("replaying the trace failed")
            self.replay_error = f"{type(exc).__name__}: {exc}"

    def _insert(self, indexes: list[int], ids: list[str], new_task: Any) -> None:
        tasks = []
        for i in indexes:
            row = self.rows[i]
            parent = row.depends_on
            tasks.append(
                new_task(
                    id=ids[i],
                    task_type=row.task_type,
                    user_id=row.user_id,
                    params={"duration_s": round(max(_MIN_TASK_S, row.duration_s / self.speed), 3)},
                    depends_on=ids[parent] if parent is not None and 0 <= parent < len(ids) else None,
                )
            )
        self.store.insert_tasks(tasks)
        self.submitted += len(tasks)

    # --- observe -------------------------------------------------------------------------------
    def snapshot(self, phase: str) -> Any:
        from orchestrator import live_view

        since = self.started_at
        counts = self.store.task_counts()
        workers = self.store.list_workers(include_terminated=False)
        now = self.store.now()
        events = self.store.list_worker_events(since=since, limit=100_000)
        decisions = self.store.list_decisions(since=since, limit=1)
        last = decisions[-1] if decisions else None
        shipper, shipper_error = self._shipper_health()
        entered: dict[str, datetime] = {}
        spawned: dict[str, datetime] = {}
        for e in events:
            if e.at is not None and (e.worker_id not in entered or e.at >= entered[e.worker_id]):
                entered[e.worker_id] = e.at
            if e.from_status is None and e.at is not None:
                spawned[e.worker_id] = e.at
            elif e.to_status == "active" and e.from_status == "spawning" and e.worker_id in spawned:
                self.longest_boot_s = max(self.longest_boot_s, (e.at - spawned[e.worker_id]).total_seconds())
        second = int(time.monotonic() - self.t0)
        while len(self.fleet_history) <= second:  # one sample a second, the current count
            self.fleet_history.append(len(workers))
        self.fleet_history[second] = len(workers)
        return live_view.Snapshot(
            elapsed_s=time.monotonic() - self.t0,
            speed=self.speed,
            trace_name=self.trace_name,
            submitted=self.submitted,
            total=len(self.rows),
            queued=counts.get("Queued", 0),
            running=counts.get("In Progress", 0),
            done=counts.get("Complete", 0) - self._done_before,
            failed=counts.get("Failed", 0) + counts.get("Cancelled", 0) - self._failed_before,
            workers=[
                live_view.WorkerLine(
                    id=w.id,
                    state=str(w.status),
                    age_s=(now - w.created_at).total_seconds(),
                    tasks_in_progress=w.tasks_in_progress,
                    in_state_s=(now - entered[w.id]).total_seconds() if w.id in entered else None,
                    idle_s=(now - w.idle_since).total_seconds()
                    if w.idle_since is not None and str(w.status) == "active"
                    else None,
                )
                for w in workers
            ],
            last_decision_at=last.at.strftime("%H:%M:%S") if last and last.at else None,
            last_decision_age_s=(now - last.at).total_seconds() if last and last.at else None,
            fleet_history=tuple(self.fleet_history),
            max_workers=self.settings.scaling.max_workers,
            last_decision=(last.reasons[0] if last.reasons else "") if last else None,
            shipper=shipper,
            shipper_error=shipper_error or self.replay_error,
            dashboard_url=self.dashboard_url,
            trace_endpoint=self.settings.telemetry.otlp_endpoint,
            spawns=sum(1 for e in events if e.from_status is None),
            terminations=sum(1 for e in events if e.to_status == "terminated"),
            phase=phase,
        )

    _done_before = 0
    _failed_before = 0

    def _shipper_health(self) -> tuple[dict[str, Any] | None, str | None]:
        if self.shipper is None:
            return None, None
        import ray

        try:
            h = ray.get(self.shipper.health.remote(), timeout=2)
        except Exception as exc:
            return None, type(exc).__name__
        last_flush = h.get("last_flush_at")
        return {
            "healthy": bool(h.get("flusher_alive", True)) and not h.get("consecutive_failures"),
            "shipped": h.get("shipped"),
            "pending": h.get("records_pending"),
            "spool_bytes": h.get("spool_bytes"),
            "dropped": h.get("dropped_total"),
            "last_flush_age_s": None if not last_flush else max(0.0, h.get("now", time.time()) - last_flush),
            "last_error": h.get("last_error"),
        }, None

    def tasks_finished(self) -> bool:
        """Every trace task submitted and in a final state."""
        if self.submitted < len(self.rows) and not self.replay_error:
            return False
        counts = self.store.task_counts()
        return not (counts.get("Queued", 0) or counts.get("In Progress", 0))

    # --- stop ----------------------------------------------------------------------------------
    def cleanup(self, say: Any) -> None:
        """Stop everything this run started, in order; each step on its own so one failure cannot
        leave the rest running."""
        self.stop_replay.set()
        steps = [
            ("stopping the Scaler", self._stop_scaler),
            ("retiring the workers", self._retire_workers),
            ("terminating pods", self._terminate_pods),
            ("flushing logs", self._flush_logs),
            ("stopping Ray", self._stop_ray),
            ("stopping the embedded Postgres", self._stop_postgres),
        ]
        for label, step in steps:
            try:
                step()
            except Exception as exc:
                say(f"{label} failed: {type(exc).__name__}: {exc}")

    def _stop_scaler(self) -> None:
        if self.scaler is None:
            return
        import ray

        with contextlib.suppress(Exception):
            ray.get(self.scaler.stop.remote(), timeout=30)

    def _retire_workers(self) -> None:
        """Ask each worker's lifecycle to stop its pod, the way `orchestrator down --terminate-pods`
        does, and wait a little for the rows to say terminated; the next step forces what is left."""
        if self.store is None or not self.ray_started:
            return
        import ray

        from actors import names

        live = self.store.list_workers(include_terminated=False)
        for worker in live:
            with contextlib.suppress(Exception):
                handle = ray.get_actor(names.worker_actor_name(worker.id), namespace=self.settings.ray.namespace)
                ray.get(handle.request_terminate.remote("demo ended"), timeout=5)
        deadline = time.monotonic() + 20
        while live and time.monotonic() < deadline:
            time.sleep(0.5)
            live = self.store.list_workers(include_terminated=False)

    def _terminate_pods(self) -> None:
        """Every pod of this orchestrator, and its worker row, so nothing keeps running."""
        from cloud.factory import make_provider
        from fleet.models import WorkerState

        if self.ray_started:  # no lifecycle may react to the pods going away below
            import ray

            from actors import names

            for name, namespace in _named_actors():
                if name == names.LOG_SHIPPER_NAME:  # it flushes the last logs next, then goes with Ray
                    continue
                with contextlib.suppress(Exception):
                    ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        provider = make_provider(self.settings)
        try:
            for pod in provider.list(self.settings.provider.name_prefix):
                provider.terminate(pod.id)
        finally:
            provider.close()
        if self.store is None:
            return
        for worker in self.store.list_workers(include_terminated=False):
            with contextlib.suppress(Exception):
                self.store.transition_worker(
                    worker.id, worker.status, WorkerState.TERMINATED, "demo ended: pod terminated by the demo"
                )

    def _flush_logs(self) -> None:
        if self.shipper is None:
            return
        import ray

        with contextlib.suppress(Exception):
            ray.get(self.shipper.flush_now.remote(5.0), timeout=10)

    def _stop_ray(self) -> None:
        if not self.ray_started:
            return
        import ray

        for name, namespace in _named_actors():
            with contextlib.suppress(Exception):
                ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        ray.shutdown()
        self.ray_started = False

    def _stop_postgres(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        from store.embedded import stop_embedded

        stop_embedded(Path(self.settings.database.embedded_dir))

    # --- report --------------------------------------------------------------------------------
    def example_worker(self) -> str | None:
        """A worker of this run the scaler started and drained: the one to `explain --worker`."""
        if self.store is None:
            return None
        try:
            events = self.store.list_worker_events(since=self.started_at, limit=100_000)
        except Exception:
            return None
        drained = [e.worker_id for e in events if e.to_status == "draining"]
        created = [e.worker_id for e in events if e.from_status is None]
        first: str | None = (drained or created or [None])[0]
        return first

    def result(self) -> Any:
        since = self.started_at
        tasks = [t for t in self.store.list_tasks(limit=1_000_000) if t.created_at >= since]
        workers = [w for w in self.store.list_workers(include_terminated=True) if w.created_at >= since]
        events = self.store.list_worker_events(since=since, limit=1_000_000)
        return summarize(tasks, workers, events, now=self.store.now(), speed=self.speed)


def _named_actors() -> list[tuple[str, str]]:
    import ray

    try:
        actors = ray.util.list_named_actors(all_namespaces=True)
    except Exception:
        return []
    return [(a["name"], a["namespace"]) for a in actors]


def _start_actors(settings: Any) -> tuple[Any, Any]:
    """The LogShipper and the Scaler, started (or re-attached) by `orchestrator.app.start_actors`."""
    from actors import names, remote
    from orchestrator import app

    app.start_actors(settings)
    namespace = settings.ray.namespace
    return remote.find_actor(names.LOG_SHIPPER_NAME, namespace), remote.find_actor(names.SCALER_NAME, namespace)


# --------------------------------------------------------------------------------------------
# the command


def command(
    trace: Annotated[
        Path, typer.Option("--trace", help="Workload CSV: arrival_s,task_type,user_id,duration_s[,depends_on].")
    ] = DEFAULT_TRACE,
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
) -> None:
    """Run the whole system locally on a replayed workload, show it live, then summarize (about 2 min)."""
    from rich.console import Console

    console = Console()
    live_ok = console.is_terminal and not plain

    def say(message: str) -> None:
        console.print(f"[dim]demo:[/dim] {message}", highlight=False)

    try:
        rows = load_trace(trace)
    except ValueError as exc:
        typer.echo(f"orchestrator demo: {exc}", err=True)
        raise typer.Exit(2) from None
    from config import ConfigError, load_settings

    compression = speed or fit_speed(rows, duration)
    try:
        settings = load_settings(overrides=demo_overrides(state_dir, compression))
    except ConfigError as exc:
        typer.echo("orchestrator demo: " + "; ".join(exc.problems), err=True)
        raise typer.Exit(2) from None
    demo = Demo(settings, rows, trace_name=trace.name, speed=compression, duration_s=duration)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Stop()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    code = 0
    example_worker: str | None = None
    try:
        demo.start(say)
        counts = demo.store.task_counts()
        demo._done_before = counts.get("Complete", 0)
        demo._failed_before = counts.get("Failed", 0) + counts.get("Cancelled", 0)
        say(f"replaying {len(rows)} tasks of {trace.name} at {compression:g}x; Ctrl-C stops cleanly")
        replayer = threading.Thread(target=demo.replay, name="demo-replay", daemon=True)
        replayer.start()
        code = _watch(demo, console, live_ok, say)
        result = demo.result()
        console.print()
        console.print("[bold]Summary[/bold]")
        for line in result.lines():
            console.print("  " + line, highlight=False, soft_wrap=True)
        console.print(
            "  fleet size:   "
            + live_view_sparkline(demo.fleet_history, settings.scaling.max_workers)
            + "  (one mark a second; _ = no worker)",
            highlight=False,
            soft_wrap=True,
        )
        example_worker = demo.example_worker()
        if result.tasks_unfinished or demo.replay_error:
            code = 1
    except (KeyboardInterrupt, _Stop):
        say("interrupted: stopping everything ...")
        code = 130
    except Exception as exc:
        from store.errors import redact

        say(f"failed: {redact(f'{type(exc).__name__}: {exc}')}")
        code = 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        with _ignore_sigint():
            demo.cleanup(say)
    state = Path(settings.state_dir)
    exe = _orchestrator_command()
    since = demo.started_at.strftime("%H:%M")
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


def live_view_sparkline(history: list[int], top: int) -> str:
    from orchestrator import live_view

    return live_view.sparkline(history, top) or "-"


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
def _ignore_sigint() -> Any:
    """A second Ctrl-C during cleanup must not leave pods or Ray behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _watch(demo: Demo, console: Any, live_ok: bool, say: Any) -> int:
    """Show the run until every task is done and the fleet is back to zero (or time runs out)."""
    from rich.live import Live

    from orchestrator import live_view

    deadline = demo.t0 + max(demo.duration_s * 2, demo.duration_s + 120)
    scale_down_by: float | None = None
    last_plain = 0.0
    phase = "running"
    live = Live(console=console, refresh_per_second=4, transient=False) if live_ok else None
    with live if live is not None else contextlib.nullcontext():
        while True:
            snap = demo.snapshot(phase)
            if live is not None:
                live.update(live_view.render(snap))
            elif time.monotonic() - last_plain >= 5:
                console.print(live_view.plain_line(snap), highlight=False, soft_wrap=True)
                last_plain = time.monotonic()
            tasks_done = demo.tasks_finished()
            if tasks_done and not snap.workers:  # the snapshot's workers are the live ones
                break
            if tasks_done:
                phase = "scaling down"
                if scale_down_by is None:
                    # The policy keeps an idle worker max(idle timeout, boot estimate) after the last
                    # demand, and no scale-down within the stabilization after a scale-up; give it
                    # that (with the slowest boot seen, so a loaded machine still scales down on its
                    # own) and some cycles before stopping the workers ourselves.
                    scaling = demo.settings.scaling
                    keep = max(scaling.idle_timeout_s, demo.longest_boot_s or scaling.default_boot_time_s)
                    scale_down_by = (
                        time.monotonic() + keep + scaling.scale_down_stabilization_s + 10 * scaling.cycle_interval_s
                    )
                elif time.monotonic() > scale_down_by:
                    say("tasks done; stopping the workers that are still up")
                    break
            if time.monotonic() > deadline:
                say(f"time is up after {time.monotonic() - demo.t0:.0f} s; stopping")
                break
            time.sleep(_POLL_S)
    if live is None:
        console.print(live_view.plain_line(demo.snapshot("done")), highlight=False, soft_wrap=True)
    return 0
