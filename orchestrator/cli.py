"""The `orchestrator` command. Each subcommand lives in its own module; heavy imports stay lazy there."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Annotated

import typer

from orchestrator import configcheck, control, demo, explain, migrate, simulate, task

app = typer.Typer(
    name="orchestrator",
    help="Keeps the right number of GPU pods alive for a Postgres task queue, and says why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    ctx: typer.Context,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Env file with the settings' variables (else $ORCHESTRATOR_ENV_FILE, else ~/.orchestrator.env "
            "when it exists); the process environment wins over it.",
        ),
    ] = None,
) -> None:
    """Keeps the right number of GPU pods alive for a Postgres task queue, and says why."""
    from config.loader import ENV_FILE_VAR

    if env_file is None:
        return
    previous = os.environ.get(ENV_FILE_VAR)
    os.environ[ENV_FILE_VAR] = str(env_file)  # every command's load_settings reads it from here

    def restore() -> None:  # for callers in the same process (tests): the option lasts one command
        if previous is None:
            os.environ.pop(ENV_FILE_VAR, None)
        else:
            os.environ[ENV_FILE_VAR] = previous

    ctx.call_on_close(restore)


config_app = typer.Typer(help="Inspect and validate configuration.", no_args_is_help=True)
config_app.command("check")(configcheck.check)
app.add_typer(config_app, name="config")

app.command("migrate")(migrate.command)
app.command("simulate")(simulate.command)
app.command("up")(control.up)
app.command("down")(control.down)
app.command("status")(control.status)
app.command("demo")(demo.command)
app.command("explain")(explain.command)
app.add_typer(task.app, name="task")


def use_rays_token_when_there_is_one(environ: MutableMapping[str, str], home: Path) -> None:
    """A Ray client reads RAY_AUTH_MODE once, when ray is imported, and a cluster `ray.init()` starts
    (the demo's) has Ray's token auth on by default. With a token at hand (RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, where Ray keeps it) every command sends it, so
    `status --address` reaches the demo's Ray as is; a client sending a token still connects to a
    cluster without auth. An explicit RAY_AUTH_MODE is left as it is."""
    if "RAY_AUTH_MODE" in environ:
        return
    path = environ.get("RAY_AUTH_TOKEN_PATH")
    token_file = Path(path) if path else home / ".ray" / "auth_token"
    if environ.get("RAY_AUTH_TOKEN") or token_file.is_file():
        environ["RAY_AUTH_MODE"] = "token"


def main() -> None:
    use_rays_token_when_there_is_one(os.environ, Path.home())
    app()


if __name__ == "__main__":
    main()
