"""`orchestrator up`, `down` and `status` (not built yet)."""

from __future__ import annotations

import typer


def up() -> None:
    """Not built yet."""
    typer.echo("orchestrator up: not built yet", err=True)
    raise typer.Exit(2)


def down() -> None:
    """Not built yet."""
    typer.echo("orchestrator down: not built yet", err=True)
    raise typer.Exit(2)


def status() -> None:
    """Not built yet."""
    typer.echo("orchestrator status: not built yet", err=True)
    raise typer.Exit(2)
