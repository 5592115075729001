"""Putting tasks into a Reigh app's queue from the command line (`orchestrator task add` in `reigh`).

The app owns `public.tasks`: the orchestrator's own `insert_tasks` refuses in this profile by
design (reigh/0020_reigh_queue.sql). An operator trying the fleet, or re-running work by hand, still
needs a way in; this writes a task exactly as the app does (and as `store.reigh.fixture.add_task`
does): a row with a project, the app's user being the project's owner. Nothing here changes the
app's tables' shape. One transaction for the whole batch: all the tasks, or none.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from store.reigh.fixture import add_task

__all__ = ["EnqueueError", "ReighTarget", "enqueue", "resolve_target"]


class EnqueueError(Exception):
    """Bad input, said in one line that names the option (`--user`, `--project`, `--depends-on`)."""


@dataclass(frozen=True)
class ReighTarget:
    user_id: str
    project_id: str
    run_type: str  # the app's run type of the task type ('gpu' when the type is not registered)


def _uuid(option: str, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise EnqueueError(f"{option}: {value!r} is not a UUID (the app's ids are UUIDs)") from None


def resolve_target(
    conn: psycopg.Connection[Any], *, user: str | None, project: str | None, task_type: str
) -> ReighTarget:
    """The project a task goes into: `--project`, or the only project of `--user`."""
    if project is not None:
        project_id = _uuid("--project", project)
        row = conn.execute("SELECT user_id::text FROM public.projects WHERE id = %s", (project_id,)).fetchone()
        if row is None:
            raise EnqueueError(f"--project: no project {project} in public.projects")
        owner = str(row[0])
        if user is not None and _uuid("--user", user) != uuid.UUID(owner):
            raise EnqueueError(f"--project: project {project} belongs to user {owner}, not to --user {user}")
    elif user is not None:
        user_id = _uuid("--user", user)
        if conn.execute("SELECT 1 FROM public.users WHERE id = %s", (user_id,)).fetchone() is None:
            raise EnqueueError(f"--user: no user {user} in public.users")
        rows = conn.execute(
            "SELECT id::text FROM public.projects WHERE user_id = %s ORDER BY created_at, id LIMIT 2", (user_id,)
        ).fetchall()
        if not rows:
            raise EnqueueError(f"--user: user {user} has no project; the app's tasks belong to a project")
        if len(rows) > 1:
            raise EnqueueError(f"--user: user {user} has several projects; name one with --project")
        project_id, owner = uuid.UUID(str(rows[0][0])), str(user_id)
    else:
        raise EnqueueError("--user or --project: one is needed (a task belongs to a project of a user)")
    run_type = conn.execute("SELECT public.get_task_run_type(%s)", (task_type,)).fetchone()
    return ReighTarget(user_id=owner, project_id=str(project_id), run_type=str(run_type[0]) if run_type else "gpu")


def enqueue(
    conn: psycopg.Connection[Any],
    target: ReighTarget,
    *,
    task_type: str,
    params: Mapping[str, Any],
    depends_on: Sequence[str],
    count: int,
) -> list[str]:
    """Insert `count` Queued tasks into the target project, in one transaction; returns their ids."""
    parents = [_uuid("--depends-on", parent) for parent in depends_on]
    for parent in parents:
        if conn.execute("SELECT 1 FROM public.tasks WHERE id = %s", (parent,)).fetchone() is None:
            raise EnqueueError(f"--depends-on: no task {parent} in public.tasks")
    with conn.transaction():
        return [
            str(add_task(conn, project_id=target.project_id, task_type=task_type, params=params, dependant_on=parents))
            for _ in range(count)
        ]
