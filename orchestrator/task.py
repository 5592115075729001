"""`orchestrator task add` and `task list`: put work into the queue and look at it, for trials and operations.

- `native`: tasks go into `orchestrator.tasks` through the store's `insert_tasks` (any backend:
  Postgres, Supabase REST, the embedded database on a laptop).
- `reigh`: the app owns `public.tasks` and the store's `insert_tasks` refuses there by design, so
  `task add` writes the row the way the app does (`store.reigh.enqueue`): into a project of a user,
  `--project ID`, or the only project of `--user ID`. It needs the app's Postgres (`DATABASE_URL`).
  `--depends-on` may be given more than once (the app's `dependant_on` is an array).

`task add` prints each new task's id on its own line on stdout (one per `--count`), and a summary on
stderr, so `ID=$(orchestrator task add ...)` works. Bad input is one line naming the option, exit 2;
an unreachable database is one line naming the host (never the password), exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from orchestrator import configcheck

if TYPE_CHECKING:
    from config.settings import OrchestratorSettings

__all__ = ["app"]

app = typer.Typer(help="Put tasks into the queue and list them (both queue profiles).", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (else ORCHESTRATOR_CONFIG, env, defaults).")
]


def _bad_input(message: str) -> NoReturn:
    typer.echo(f"orchestrator task: {message}", err=True)
    raise typer.Exit(2)


def _database_error(message: str) -> NoReturn:
    typer.echo(f"orchestrator task: database: {message}", err=True)
    raise typer.Exit(1)


def _parse_params(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        _bad_input(f"--params: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})")
    if not isinstance(value, dict):
        _bad_input(f"--params: must be a JSON object ({{...}}), not a {type(value).__name__}")
    return value


@app.command("add")
def add(
    task_type: Annotated[str, typer.Option("--type", help="The task type, e.g. travel_segment.")],
    user: Annotated[
        str | None,
        typer.Option("--user", help="The user the task belongs to (reigh: the app's user id; its only project)."),
    ] = None,
    params: Annotated[str, typer.Option("--params", help="The task's parameters, a JSON object.")] = "{}",
    depends_on: Annotated[
        list[str] | None,
        typer.Option("--depends-on", help="A task that must be Complete first (reigh: may be repeated)."),
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="reigh: the app's project id the task goes into.")
    ] = None,
    count: Annotated[int, typer.Option("--count", help="How many such tasks to add.")] = 1,
    config: ConfigOption = None,
) -> None:
    """Add Queued task(s); prints each new id on its own line."""
    from config.settings import QueueProfile

    if not task_type.strip():
        _bad_input("--type: must not be empty")
    if not 1 <= count <= 10_000:
        _bad_input(f"--count: {count} is outside 1..10000")
    values = _parse_params(params)
    parents = [p for p in (depends_on or [])]
    if any(not p.strip() for p in parents):
        _bad_input("--depends-on: must not be empty")
    settings = configcheck.load_or_exit(config)
    if settings.queue.profile is QueueProfile.REIGH:
        ids = _add_reigh(settings, task_type, user, project, values, parents, count)
    else:
        if project is not None:
            _bad_input("--project: only the reigh queue profile has projects (queue.profile is native)")
        if user is None or not user.strip():
            _bad_input("--user: required in the native queue profile")
        if len(parents) > 1:
            _bad_input("--depends-on: the native queue takes one dependency per task")
        ids = _add_native(settings, task_type, user, values, parents[0] if parents else None, count)
    for task_id in ids:
        typer.echo(task_id)
    typer.echo(f"queued {len(ids)} task(s) of type {task_type} ({settings.queue.profile.value} queue)", err=True)


def _add_native(
    settings: OrchestratorSettings,
    task_type: str,
    user: str,
    params: dict[str, Any],
    depends_on: str | None,
    count: int,
) -> list[str]:
    from store.base import NewTask, StoreError
    from store.factory import one_shot_store

    try:
        with one_shot_store(settings) as store:
            if depends_on is not None and store.get_task(depends_on) is None:
                _bad_input(f"--depends-on: no task {depends_on} in the queue")
            new = [NewTask(task_type=task_type, user_id=user, params=params, depends_on=depends_on)] * count
            return store.insert_tasks(new)
    except StoreError as exc:
        _database_error(str(exc))


def _add_reigh(
    settings: OrchestratorSettings,
    task_type: str,
    user: str | None,
    project: str | None,
    params: dict[str, Any],
    depends_on: list[str],
    count: int,
) -> list[str]:
    import psycopg

    from store.errors import redact, unavailable
    from store.reigh.enqueue import EnqueueError, enqueue, resolve_target

    database = settings.database
    if database.url is None:
        _bad_input(
            f"queue profile reigh: `task add` writes the app's public.tasks and needs its Postgres (database.backend "
            f"postgres with DATABASE_URL), not database.backend {database.backend.value}"
        )
    conninfo = database.url.get_secret_value()
    try:
        with psycopg.connect(conninfo, connect_timeout=max(1, round(database.connect_timeout_s))) as conn:
            target = resolve_target(conn, user=user, project=project, task_type=task_type)
            ids = enqueue(conn, target, task_type=task_type, params=params, depends_on=depends_on, count=count)
    except EnqueueError as exc:
        _bad_input(str(exc))
    except psycopg.OperationalError as exc:
        _database_error(str(unavailable(conninfo, "connecting to add a task", exc)))
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _database_error(redact(first, conninfo))
    if target.run_type != settings.queue.run_type:
        typer.echo(
            f"note: task type {task_type} has run type {target.run_type} in the app; this fleet serves "
            f"{settings.queue.run_type} (queue.run_type), so no pod will be started for it",
            err=True,
        )
    return ids


@app.command("list")
def list_(
    status: Annotated[
        str | None, typer.Option("--status", help="Only tasks of this status: Queued, In Progress, Complete, ...")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, oldest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
) -> None:
    """The oldest tasks (of one status), with their worker and attempts; then counts by status."""
    from store.base import StoreError, TaskStatus
    from store.factory import one_shot_store

    if status is not None and status not in TaskStatus.ALL:
        _bad_input(f"--status: {status!r} is not one of {', '.join(TaskStatus.ALL)}")
    if not 1 <= limit <= 100_000:
        _bad_input(f"--limit: {limit} is outside 1..100000")
    settings = configcheck.load_or_exit(config)
    try:
        with one_shot_store(settings) as store:
            tasks = store.list_tasks(status=status, limit=limit)
            counts = store.task_counts()
    except StoreError as exc:
        _database_error(str(exc))
    if as_json:
        typer.echo(json.dumps({"tasks": [t.model_dump(mode="json") for t in tasks], "counts": counts}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tasks ({settings.queue.profile.value} queue)")
    for column in ("id", "type", "status", "user", "worker", "attempts", "created", "depends on"):
        table.add_column(column, overflow="fold")
    for t in tasks:
        table.add_row(
            t.id,
            t.task_type,
            t.status,
            t.user_id,
            t.worker_id or "-",
            str(t.attempts),
            t.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            t.depends_on or "-",
        )
    console = Console(width=200)
    console.print(table)
    console.print(f"counts {counts}")
