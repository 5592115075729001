"""`orchestrator up`, `down` and `status`: start, stop and look at the running system.

- `up` connects to a running Ray cluster, applies migrations, creates or re-attaches the detached
  actors (LogShipper, Scaler), prints where to look, and returns. Running it twice changes nothing.
- `down` stops the actors. Pods keep running and the next `up` adopts them (their worker rows are
  still live, so the Scaler re-creates their lifecycles). `--terminate-pods` drains, then
  terminates every pod, and confirms with the provider that none is left.
- `status` reads the database (leader, epoch, last decision, workers) and, when Ray answers, the
  Scaler and every actor's Ray state and restart count. It works with Ray down. The Scaler's and
  each WorkerLifecycle's `health()` are facts with a verdict: `status` says plainly when the loop is
  stuck (and in which phase) or which phase keeps failing and why. With the database unreachable it
  still answers (exit 1): what the Scaler says of the outage, "database unreachable since HH:MM:SS
  (N attempts)", and every actor's Ray state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from actors import names
from config.settings import OrchestratorSettings
from orchestrator import configcheck

Echo = Callable[[str], object]

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (else ORCHESTRATOR_CONFIG, env, defaults).")
]
AddressOption = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (default: ray.address from config, `auto`).")
]

# How long `status` waits for the Scaler's own answer before showing what the database says.
_STATUS_TIMEOUT_S = 5.0


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


# --- up --------------------------------------------------------------------------------------------
def up(config: ConfigOption = None, address: AddressOption = None) -> None:
    """Start (or re-attach) the orchestrator's actors on a running Ray cluster, then return."""
    from orchestrator import app
    from store.base import StoreError

    settings = configcheck.load_or_exit(config)
    try:
        report = app.up(settings, address)
    except StoreError as exc:
        raise _fail(f"database: {exc}") from None
    except ConnectionError as exc:
        raise _fail(
            f"ray: no cluster at {address or settings.ray.address} ({exc}); start one with `ray start --head` "
            "or `ray up ray_cluster.yaml`"
        ) from None
    typer.echo(f"database   {report.database} (migrations applied)")
    typer.echo(f"ray        namespace {report.namespace}; dashboard {report.dashboard_url or '(not available)'}")
    for name, how in report.actors.items():
        typer.echo(f"actor      {name}: {how}")
    typer.echo("workers    one actor per pod, named worker:<worker id>")
    for note in report.notes:
        typer.echo(f"note       {note}")
    typer.echo("next       `orchestrator status` for the fleet, `orchestrator explain` for why")


# --- down ------------------------------------------------------------------------------------------
def down(
    config: ConfigOption = None,
    address: AddressOption = None,
    terminate_pods: Annotated[
        bool, typer.Option("--terminate-pods", help="Drain, then terminate every pod and confirm it is gone.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for pods to drain and terminate.")] = 900.0,
) -> None:
    """Stop the actors. Pods keep running (the next `up` adopts them) unless --terminate-pods."""
    from orchestrator import app

    settings = app.resolve_settings(configcheck.load_or_exit(config))
    try:
        app.connect_ray(settings, address)
    except ConnectionError as exc:
        raise _fail(f"ray: no cluster at {address or settings.ray.address} ({exc})") from None
    result = stop_fleet(settings, terminate_pods=terminate_pods, timeout_s=timeout, echo=typer.echo)
    if result["pods_left"]:
        raise _fail(f"pods still present at the provider: {', '.join(result['pods_left'])}")


def stop_fleet(
    settings: OrchestratorSettings,
    *,
    terminate_pods: bool,
    timeout_s: float,
    scaler_name: str = names.SCALER_NAME,
    echo: Echo = print,
) -> dict[str, Any]:
    """`down` without the CLI: stop the Scaler (lease released), then terminate pods or just stop lifecycles."""
    import ray

    from actors import remote

    namespace = settings.ray.namespace
    scaler = remote.find_actor(scaler_name, namespace)
    if scaler is not None:
        try:
            ray.get(scaler.stop.remote("orchestrator down"), timeout=60)  # it records its stop itself
        except Exception as exc:  # a dead or hung Scaler: its lease expires by itself
            echo(f"scaler did not stop cleanly ({type(exc).__name__}); killing it")
            record_stop(
                settings, f"orchestrator down: the Scaler did not stop cleanly ({type(exc).__name__}), killed", echo
            )
        ray.kill(scaler, no_restart=True)
        echo(f"stopped {scaler_name}")
    else:
        record_stop(settings, "orchestrator down: no Scaler was running", echo)
    pods_left: list[str] = []
    if terminate_pods:
        pods_left = _terminate_everything(settings, timeout_s, echo)
    for row in app_actor_names(namespace):
        if row.startswith(names.WORKER_ACTOR_PREFIX):
            _kill(row, namespace)
    echo(
        "stopped the worker lifecycles"
        + ("" if terminate_pods else "; pods keep running and the next `up` adopts them")
    )
    _kill(names.LOG_SHIPPER_NAME, namespace)
    echo(f"stopped {names.LOG_SHIPPER_NAME}")
    # Last: the lifecycles stopped above made their store calls through it.
    _kill(names.STORE_GATEWAY_NAME, namespace)
    echo(f"stopped {names.STORE_GATEWAY_NAME}")
    return {"pods_left": pods_left}


def record_stop(settings: OrchestratorSettings, reason: str, echo: Echo = print) -> None:
    """Record the stop for `explain` when the Scaler could not (dead, hung, or none running), so the
    quiet after `down` reads "stopped", not "silent". A failure is said and counted, never raised."""
    import socket

    from store.base import OrchestratorEventKind
    from store.factory import one_shot_store
    from telemetry import metrics

    try:
        with one_shot_store(settings) as store:
            store.record_orchestrator_event(OrchestratorEventKind.STOPPED, f"{socket.gethostname()}/down", reason)
    except Exception as exc:
        metrics.record_error("down", "record_stop")
        echo(f"warning: the stop could not be recorded ({type(exc).__name__}); explain will call what follows silence")


def app_actor_names(namespace: str) -> list[str]:
    from orchestrator import app

    return [row["name"] for row in app.actor_table(namespace)]


def _kill(name: str, namespace: str) -> None:
    import ray

    from actors import remote

    handle = remote.find_actor(name, namespace)
    if handle is not None:
        ray.kill(handle, no_restart=True)


def _terminate_everything(settings: OrchestratorSettings, timeout_s: float, echo: Echo) -> list[str]:
    """Every live worker is asked (again, until done) to terminate; every pod of ours is confirmed gone."""
    from actors import remote
    from cloud.factory import make_provider
    from store.factory import open_store

    store = open_store(settings)
    provider = make_provider(settings)
    deadline = time.monotonic() + timeout_s
    try:
        live = store.list_workers()
        echo(f"terminating {len(live)} worker(s): drain first, then stop the pod")
        while live and time.monotonic() < deadline:
            for row in live:
                handle = remote.get_or_create_lifecycle(row.id, settings)
                handle.request_terminate.remote("orchestrator down --terminate-pods")
            time.sleep(1.0)
            live = store.list_workers()
        # Pods of ours without a live row (orphans, or a worker that gave up) are stopped directly.
        live_ids = {r.id for r in live}
        for pod in provider.list(settings.provider.name_prefix):
            if pod.name not in live_ids:
                provider.terminate(pod.id)
        left = [pod.name for pod in provider.list(settings.provider.name_prefix)]
        echo(f"pods left at the provider ({provider.name}): {len(left)}")
        return left
    finally:
        store.close()
        provider.close()


# --- status ----------------------------------------------------------------------------------------
def collect_status(
    settings: OrchestratorSettings, address: str | None = None, *, scaler_name: str = names.SCALER_NAME
) -> dict[str, Any]:
    """The whole picture as plain data: database first (always tried), then Ray (when reachable).
    An unreachable database is part of the picture (`database.reachable` False), not an error."""
    from store.base import DatabaseUnavailable

    out: dict[str, Any] = {"at": datetime.now(tz=UTC).isoformat()}
    try:
        _database_status(settings, out)
        out["database"] = {"reachable": True}
    except DatabaseUnavailable as exc:
        out["database"] = {"reachable": False, "error": str(exc)}
        out.setdefault("workers", [])
    out["ray"] = _ray_status(settings, address, scaler_name)
    if out["ray"].get("reachable"):
        out["ray"]["lifecycles"] = _lifecycle_health(settings, [w["id"] for w in out["workers"]])
    return out


def _database_status(settings: OrchestratorSettings, out: dict[str, Any]) -> None:
    """What the database says: leader, last decision, last start or stop, tasks, workers."""
    from store.base import TaskStatus
    from store.factory import one_shot_store

    with one_shot_store(settings) as store:
        now = store.now()
        lease = store.get_leader_lease("scaler")
        out["leader"] = (
            {
                "holder": lease.holder,
                "epoch": lease.epoch,
                "expires_at": lease.expires_at.isoformat(),
                "valid": lease.expires_at > now,
            }
            if lease is not None
            else None
        )
        decisions = store.list_decisions(limit=1)
        out["last_decision"] = decisions[-1].model_dump(mode="json") if decisions else None
        runs = store.list_orchestrator_events(limit=1)  # its last recorded start or clean stop
        out["last_start_or_stop"] = runs[-1].model_dump(mode="json") if runs else None
        in_progress: dict[str, list[str]] = {}
        for task in store.list_tasks(status=TaskStatus.IN_PROGRESS):
            in_progress.setdefault(task.worker_id or "", []).append(task.id)
        out["tasks"] = store.task_counts()
        out["workers"] = [
            {
                "id": w.id,
                "state": w.status.value,
                "pod": w.pod_id,
                "gpu": w.gpu_type,
                "age_s": round((now - w.created_at).total_seconds(), 1),
                "last_heartbeat_s_ago": (
                    round((now - w.last_heartbeat_at).total_seconds(), 1) if w.last_heartbeat_at else None
                ),
                "current_tasks": in_progress.get(w.id, []),
            }
            for w in store.list_workers()
        ]


def _lifecycle_health(settings: OrchestratorSettings, worker_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each live worker's lifecycle `health()`, asked all at once, within one status timeout."""
    import ray

    from actors import remote

    out: dict[str, dict[str, Any]] = {}
    refs: dict[str, Any] = {}
    for worker_id in worker_ids:
        handle = remote.find_actor(names.worker_actor_name(worker_id), settings.ray.namespace)
        if handle is None:
            out[worker_id] = {"ok": False, "verdict": "absent", "summary": "no lifecycle actor"}
        else:
            refs[worker_id] = handle.health.remote()
    if refs:
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=_STATUS_TIMEOUT_S)
        done = set(ready)
        for worker_id, ref in refs.items():
            if ref not in done:
                why = f"no answer in {_STATUS_TIMEOUT_S:g}s"
                out[worker_id] = {"ok": False, "verdict": "no answer", "summary": why}
                continue
            try:
                out[worker_id] = dict(ray.get(ref))
            except Exception as exc:  # shown in the table: the operator sees which lifecycle and why
                out[worker_id] = {"ok": False, "verdict": "error", "summary": f"{type(exc).__name__}: {exc}"}
    return out


def _ray_status(settings: OrchestratorSettings, address: str | None, scaler_name: str) -> dict[str, Any]:
    import ray

    from actors import remote
    from orchestrator import app

    try:
        app.connect_ray(settings, address)
    except Exception as exc:
        return {"reachable": False, "error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"reachable": True, "scaler": None}
    scaler = remote.find_actor(scaler_name, settings.ray.namespace)
    if scaler is not None:
        try:
            out["scaler"] = ray.get(scaler.status.remote(), timeout=_STATUS_TIMEOUT_S)
        except Exception as exc:
            out["scaler"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        out["actors"] = app.actor_table(settings.ray.namespace)
    except Exception as exc:  # the state API needs the dashboard
        out["actors_error"] = f"{type(exc).__name__}: {exc}"
    return out


def status(
    config: ConfigOption = None,
    address: AddressOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Leader and epoch, the last decision, every worker, and every actor's Ray state and restarts."""
    from store.base import StoreError

    settings = configcheck.load_or_exit(config)
    try:
        data = collect_status(settings, address)
    except StoreError as exc:
        raise _fail(f"database: {exc}") from None
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        render_status(data)
    if not data["database"]["reachable"]:
        raise typer.Exit(1)


def _verdict(health: dict[str, Any]) -> str:
    verdict = str(health.get("verdict"))
    colour = {"ok": "green", "finished": "green", "failing": "yellow"}.get(verdict, "red")
    return f"[{colour}]{verdict if colour != 'red' else verdict.upper()}[/]"


def lifecycle_cell(health: dict[str, Any] | None) -> str:
    """A worker's lifecycle in the workers table: its verdict, and what fails how often (the why is
    printed under the table)."""
    if health is None:
        return "-"
    failing = health.get("consecutive_failures") or {}
    counts = ", ".join(f"{what} x{n}" for what, n in failing.items())
    return f"{_verdict(health)} {counts}".strip()


def scaler_lines(scaler: dict[str, Any], now: float) -> list[str]:
    """What `status` says about the Scaler (rich markup), from its `status()` answer: its role and last
    cycle, its health in plain words (stuck and in which phase, or which phase keeps failing and its
    error), pod terminates being retried, the breaker, and what it wants now."""
    lines: list[str] = []
    if not scaler.get("role"):
        if scaler.get("error"):
            lines.append(f"[red]scaler did not answer[/]: {scaler['error']}")
        return lines
    line = f"[bold]scaler[/] {scaler.get('name')}: {scaler['role']}"
    if scaler["role"] != "leader":
        line += f" (leader is {scaler.get('leader_holder')}, epoch {scaler.get('leader_epoch')})"
    if scaler.get("last_cycle_at"):
        ago = now - scaler["last_cycle_at"]
        line += f"; cycle {scaler.get('cycle')} {ago:.1f}s ago took {1000 * scaler.get('last_cycle_s', 0):.0f} ms"
    lines.append(line)
    health = scaler.get("health") or {}
    if health:
        lines.append(f"[bold]loop[/] {_verdict(health)}: {health.get('summary')}")
    if scaler.get("phase_errors"):
        for phase, error in scaler["phase_errors"].items():
            lines.append(f"[red]phase {phase} failed[/] in the last cycle: {error}")
    for what, why in (scaler.get("phase_skipped") or {}).items():
        lines.append(f"[yellow]{what}[/] {why}")
    for worker_id, error in (scaler.get("malformed_rows") or {}).items():
        lines.append(f"[red]worker row {worker_id} is malformed[/] ({error}): left out of the last cycle")
    for pod, retry in (scaler.get("pod_retries") or {}).items():
        lines.append(
            f"[red]terminate of pod {pod} failing[/]: {retry.get('attempts')} attempt(s), "
            f"last error {retry.get('last_error')}; next try in {retry.get('next_in_s')}s"
        )
    breaker = scaler.get("breaker") or {}
    if breaker.get("status") and breaker["status"] != "closed":
        lines.append(
            f"[red]breaker {breaker['status']}[/]: {breaker.get('failures_in_window')} failed of "
            f"{breaker.get('attempts_in_window')} spawns (rate {breaker.get('failure_rate', 0):.2f})"
        )
    last = scaler.get("last_decision")
    if last:
        lines.append(f"[bold]now[/] desired {last['desired']}, capacity {last['capacity']}")
        lines.extend(f"  {reason}" for reason in last["reasons"])
    return lines


def database_lines(database: dict[str, Any], scaler: dict[str, Any]) -> list[str]:
    """What `status` says while the database is out of reach: since when and how many attempts, as
    the Scaler counts them (it keeps trying), and that nothing is decided meanwhile."""
    if database.get("reachable", True):
        return []
    lines = [f"[bold red]database unreachable[/] now: {database.get('error')}"]
    seen = scaler.get("database") or {}
    if seen.get("reachable") is False:
        lines.append(
            f"[bold red]{seen.get('summary')}[/] (the Scaler's count; {seen.get('cycles_without_decision')} cycle(s) "
            "without a decision: nothing is spawned, drained or terminated until it is back; the workers keep "
            "their tasks and pods)"
        )
    elif scaler.get("role"):
        lines.append("the Scaler has not noticed yet (its next cycle will)")
    else:
        lines.append("the Scaler did not answer, so since when is unknown here")
    return lines


def render_status(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    leader = data.get("leader")
    ray_info = data.get("ray", {})
    scaler = ray_info.get("scaler") or {}
    database = data.get("database") or {"reachable": True}
    for line in database_lines(database, scaler):
        console.print(line)
    if not database.get("reachable", True):
        pass  # leader, decisions, tasks and workers are in the database: unknown now
    elif leader is None:
        console.print("[bold]leader[/] none yet")
    else:
        valid = "" if leader["valid"] else " [red](expired)[/]"
        console.print(f"[bold]leader[/] {leader['holder']} epoch {leader['epoch']}{valid}")
    for line in scaler_lines(scaler, time.time()):
        console.print(line)
    run = data.get("last_start_or_stop")
    if run and run["kind"] == "stopped":
        console.print(f"[bold]orchestrator[/] stopped at {run['at']} ({run['reason']}); not started since")
    decision = data.get("last_decision")
    if decision:
        console.print(
            f"[bold]last recorded decision[/] #{decision['id']} ({decision.get('kind') or 'no kind'}) "
            f"cycle {decision['cycle_number']} at {decision['at']}: "
            f"spawn {decision['spawn_count']}, drain {decision['drain_worker_ids'] or 'none'}"
        )
        for reason in decision["reasons"]:
            console.print(f"  {reason}")
    if database.get("reachable", True):
        console.print(f"[bold]tasks[/] {data.get('tasks')}")

    lifecycles: dict[str, dict[str, Any]] = ray_info.get("lifecycles") or {}
    table = Table(title="workers")
    for column in ("worker", "state", "pod", "gpu", "age", "last heartbeat", "current task", "lifecycle"):
        table.add_column(column)
    for w in data.get("workers", []):
        hb = "never" if w["last_heartbeat_s_ago"] is None else f"{w['last_heartbeat_s_ago']:.0f}s ago"
        table.add_row(
            w["id"],
            w["state"],
            w["pod"] or "-",
            w["gpu"] or "-",
            f"{w['age_s']:.0f}s",
            hb,
            ", ".join(t[:8] for t in w["current_tasks"]) or "-",
            lifecycle_cell(lifecycles.get(w["id"])),
        )
    console.print(table)
    for worker_id, health in lifecycles.items():
        if not health.get("ok"):
            console.print(f"[bold]lifecycle[/] {worker_id} {_verdict(health)}: {health.get('summary')}")

    if not ray_info.get("reachable"):
        console.print(f"[yellow]ray unreachable[/]: {ray_info.get('error')} (database view only)")
        return
    actors = Table(title="actors (Ray)")
    for column in ("name", "state", "pid", "restarts", "repr"):
        actors.add_column(column)
    for a in ray_info.get("actors", []):
        actors.add_row(a["name"], str(a["state"]), str(a["pid"] or "-"), str(a["restarts"]), a["repr"])
    console.print(actors)
    if ray_info.get("actors_error"):
        console.print(f"[yellow]actor list unavailable[/]: {ray_info['actors_error']}")
