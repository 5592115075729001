"""`orchestrator config check [FILE]`: the effective config with secrets masked, or one line per problem.

A valid config may still hand pods more than they need: those cases are warned about on stderr
(`credential_warnings`), one line each, and the exit code stays 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from config import ConfigError, OrchestratorSettings, load_settings, masked_dump
from config.settings import DatabaseBackend, QueueProfile, WorkerCredentials


def load_or_exit(file: Path | None) -> OrchestratorSettings:
    """The settings, or every problem on stderr (one line each, naming the field) and exit 2."""
    try:
        return load_settings(file)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(2) from None


def credential_warnings(settings: OrchestratorSettings) -> list[str]:
    """What the pods would hold beyond their own work (README: "What a worker's credential may do")."""
    database, queue = settings.database, settings.queue
    if queue.profile is QueueProfile.REIGH:
        return [
            "warning: queue.profile is reigh: every pod receives the app's Supabase service-role key "
            "(SUPABASE_SERVICE_ROLE_KEY), because the unchanged Headless-Wan2GP worker calls the app's edge functions "
            "with it; code running in a pod can read and write all of the app's data. That is the app's design; the "
            "orchestrator puts nothing else of its own into the pods."
        ]
    if database.worker_credentials is WorkerCredentials.SHARED:
        return [
            "warning: database.worker_credentials is shared: every pod receives the orchestrator's own database "
            "credential and could read every user's tasks, rewrite the queue or drop tables; use scoped (the default) "
            "unless the database cannot make roles."
        ]
    warnings: list[str] = []
    if database.backend is DatabaseBackend.SUPABASE:
        if database.supabase_jwt_secret is None:
            warnings.append(
                "warning: database.supabase_jwt_secret (SUPABASE_JWT_SECRET) is not set: pods get a token of their own "
                "worker signed with it, so no pod can be created until it is (Project Settings > API > JWT Settings)."
            )
        if queue.supabase_anon_key is None:
            warnings.append(
                "warning: queue.supabase_anon_key (SUPABASE_ANON_KEY) is not set: pods send their own token as "
                "`apikey`, which Supabase's API gateway refuses (a PostgREST reached directly accepts it)."
            )
    return warnings


def check(
    file: Annotated[Path | None, typer.Argument(help="YAML config file (default: $ORCHESTRATOR_CONFIG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the effective configuration (exit 0) or every problem with its field path (exit 2)."""
    settings = load_or_exit(file)
    for warning in credential_warnings(settings):
        typer.echo(warning, err=True)
    dump = masked_dump(settings)
    if as_json:
        typer.echo(json.dumps(dump, indent=2))
    else:
        typer.echo(yaml.safe_dump(dump, sort_keys=False).rstrip())
