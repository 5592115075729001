"""`orchestrator config check [FILE]`: the effective config with secrets masked, or one line per problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml

from config import ConfigError, OrchestratorSettings, load_settings, masked_dump


def load_or_exit(file: Path | None) -> OrchestratorSettings:
    """The settings, or every problem on stderr (one line each, naming the field) and exit 2."""
    try:
        return load_settings(file)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(problem, err=True)
        raise typer.Exit(2) from None


def check(
    file: Annotated[Path | None, typer.Argument(help="YAML config file (default: $ORCHESTRATOR_CONFIG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of YAML.")] = False,
) -> None:
    """Print the effective configuration (exit 0) or every problem with its field path (exit 2)."""
    dump = masked_dump(load_or_exit(file))
    if as_json:
        typer.echo(json.dumps(dump, indent=2))
    else:
        typer.echo(yaml.safe_dump(dump, sort_keys=False).rstrip())
