"""The `orchestrator` command. Each subcommand lives in its own module; heavy imports stay lazy there."""

from __future__ import annotations

import typer

from orchestrator import configcheck, control, demo, explain, migrate, simulate, task

app = typer.Typer(
    name="orchestrator",
    help="Keeps the right number of GPU pods alive for a Postgres task queue, and says why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
