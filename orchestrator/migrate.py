"""`orchestrator migrate [--sql] [--config FILE]`: apply the schema, or print it for Supabase.

Without `--sql` it applies pending migrations to the configured database (the embedded one by
default, started if needed) and prints what it applied. With `--sql` it prints the whole schema as
one idempotent script for a Supabase SQL editor or `supabase db push`, and touches nothing.
An unreachable database is one line naming the host and what was tried, exit 2: no traceback,
never the password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator import configcheck


def command(
    sql: Annotated[
        bool,
        typer.Option("--sql", help="Print the SQL for a Supabase SQL editor or `supabase db push`; apply nothing."),
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config file (default: $ORCHESTRATOR_CONFIG).")
    ] = None,
) -> None:
    """Apply pending database migrations (safe to run twice, and from two processes at once)."""
    from store.migrate import render_sql

    settings = configcheck.load_or_exit(config)
    profile = settings.queue.profile.value
    if sql:
        typer.echo(render_sql(profile), nl=False)
        return
    import psycopg

    from config.settings import DatabaseBackend
    from store.base import DatabaseUnavailable
    from store.errors import describe_conninfo, redact, unavailable
    from store.factory import conninfo_for
    from store.migrate import (
        MigrationChanged,
        MigrationFileError,
        ProfileMismatch,
        apply_migrations,
        load_migrations,
    )

    database = settings.database
    if database.backend is DatabaseBackend.SUPABASE:
        typer.echo(
            f"migrate: {database.supabase_url} is a Supabase REST URL, which cannot change the schema. Either run "
            "`orchestrator migrate --sql` and paste the output into the Supabase SQL editor (or save it under "
            "supabase/migrations/ and run `supabase db push`), or set DATABASE_URL to the project's direct "
            "connection string and run `orchestrator migrate` again.",
            err=True,
        )
        raise typer.Exit(2)
    try:
        conninfo = conninfo_for(database)
        assert conninfo is not None
        where = describe_conninfo(conninfo)
        try:
            applied = apply_migrations(conninfo, profile=profile, connect_timeout_s=database.connect_timeout_s)
        except (ProfileMismatch, MigrationChanged, MigrationFileError) as exc:
            typer.echo(f"migrate: {exc}", err=True)
            raise typer.Exit(2) from None
        except psycopg.OperationalError as exc:
            raise unavailable(conninfo, "connecting to apply migrations", exc) from None
        except psycopg.Error as exc:
            message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            typer.echo(
                f"migrate: a migration failed at {where}, it and those after it were not applied "
                f"(only files before an outside-transaction one stay applied): {message}",
                err=True,
            )
            raise typer.Exit(1) from None
    except DatabaseUnavailable as exc:
        typer.echo(f"migrate: {exc}", err=True)
        raise typer.Exit(2) from None
    for name in applied:
        typer.echo(f"applied {name}")
    total = len(load_migrations(profile))
    if applied:
        typer.echo(f"{len(applied)} migration(s) applied to {where}; {total} in all")
    else:
        typer.echo(f"nothing to apply: all {total} migrations are already applied to {where}")
