"""Helpers over the Reigh-shaped app database of `app_fixture.sql` (tests, the demo, the `reigh` profile).

The fixture stands in for the Reigh app's own Supabase database, which the orchestrator adopts as it
is; these helpers only fill it with users, projects, task types and tasks the way the app would.
They run on the caller's connection and do not commit: use an autocommit connection, or commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

__all__ = [
    "FIXTURE_SQL",
    "add_project",
    "add_task",
    "add_task_type",
    "add_user",
    "apply_app_fixture",
]

FIXTURE_SQL = Path(__file__).with_name("app_fixture.sql")


def apply_app_fixture(conninfo: str) -> None:
    """Create the app's schema and functions in the database at `conninfo` (one transaction; safe twice)."""
    script = FIXTURE_SQL.read_text(encoding="utf-8")
    with psycopg.connect(conninfo) as conn:
        conn.execute(script.encode())  # bytes: the script is sent as is, no parameter parsing
        conn.commit()


def add_user(
    conn: psycopg.Connection[Any],
    *,
    credits: int | float | Decimal,
    in_cloud: bool | None,
    name: str | None = None,
) -> uuid.UUID:
    """A user with `credits`; `in_cloud` None leaves the setting absent (which allows cloud runs)."""
    settings: dict[str, Any] = {}
    if in_cloud is not None:
        settings = {"ui": {"generationMethods": {"inCloud": in_cloud, "onComputer": not in_cloud}}}
    user_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO public.users (id, name, email, api_keys, settings, credits) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            user_id,
            name or f"user-{user_id.hex[:8]}",
            f"{user_id.hex[:8]}@example.invalid",
            Jsonb({}),
            Jsonb(settings),
            credits,
        ),
    )
    return user_id


def add_project(conn: psycopg.Connection[Any], user_id: uuid.UUID | str, name: str | None = None) -> uuid.UUID:
    project_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO public.projects (id, name, user_id, settings) VALUES (%s, %s, %s, %s)",
        (project_id, name or f"project-{project_id.hex[:8]}", user_id, Jsonb({})),
    )
    return project_id


def add_task_type(conn: psycopg.Connection[Any], name: str, run_type: str) -> None:
    """Declare (or re-declare) a task type's run type: 'gpu' or 'api'."""
    conn.execute(
        "INSERT INTO public.task_types (name, run_type) VALUES (%s, %s)"
        " ON CONFLICT (name) DO UPDATE SET run_type = excluded.run_type",
        (name, run_type),
    )


def add_task(
    conn: psycopg.Connection[Any],
    *,
    project_id: uuid.UUID | str,
    task_type: str,
    params: Mapping[str, Any],
    dependant_on: Sequence[uuid.UUID | str] = (),
    status: str = "Queued",
    task_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A task as the app inserts it (`dependant_on` empty: NULL); `status` lets a test seed other states."""
    task_id = task_id or uuid.uuid4()
    parents = [uuid.UUID(str(p)) for p in dependant_on] or None
    conn.execute(
        "INSERT INTO public.tasks (id, task_type, params, status, dependant_on, project_id)"
        " VALUES (%s, %s, %s, %s::public.task_status, %s, %s)",
        (task_id, task_type, Jsonb(dict(params)), status, parents, project_id),
    )
    return task_id
