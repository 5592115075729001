"""The env file: every command reads it through the settings loader, the process environment wins,
values never appear in an error, and a cluster node never falls back to an embedded database."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from config import ConfigError, load_settings
from config.loader import cluster_reason, read_env_file
from config.settings import DatabaseBackend
from orchestrator.cli import app

SECRET = "hunter2-very-secret"
URL = f"postgresql://bob:{SECRET}@db.example:5432/app"


def _env_file(directory: Path, text: str, name: str = ".orchestrator.env") -> Path:
    path = directory / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_default_file_in_home_is_read(tmp_path: Path) -> None:
    _env_file(
        tmp_path,
        "# written by head_setup_commands\n"
        f"export DATABASE_URL='{URL}'\n"
        "ORCHESTRATOR_DATABASE__BACKEND=postgres\n"
        'export ORCHESTRATOR_SCALING__MAX_WORKERS="7"  # a comment\n'
        "\n",
    )
    settings = load_settings(environ={"HOME": str(tmp_path)})
    assert settings.database.backend is DatabaseBackend.POSTGRES
    assert settings.database.url is not None and settings.database.url.get_secret_value() == URL
    assert settings.scaling.max_workers == 7


def test_the_process_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = _env_file(tmp_path, "ORCHESTRATOR_SCALING__MAX_WORKERS=7\n", name="other.env")
    settings = load_settings(environ={"ORCHESTRATOR_ENV_FILE": str(path), "ORCHESTRATOR_SCALING__MAX_WORKERS": "3"})
    assert settings.scaling.max_workers == 3
    assert load_settings(environ={}, env_file=path).scaling.max_workers == 7


def test_the_file_can_name_the_yaml_config(tmp_path: Path) -> None:
    (tmp_path / "orchestrator.yaml").write_text("scaling:\n  max_workers: 5\n")
    _env_file(tmp_path, "ORCHESTRATOR_CONFIG=~/orchestrator.yaml\n")
    assert load_settings(environ={"HOME": str(tmp_path)}).scaling.max_workers == 5


def test_shell_quoting_as_shlex_writes_it(tmp_path: Path) -> None:
    import shlex

    value = 'it\'s "quoted" $not-expanded'
    path = _env_file(tmp_path, f"export X={shlex.quote(value)}\nY=\n")
    assert read_env_file(path) == {"X": value, "Y": ""}


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (f"DATABASE_URL {URL}", "line 2: not KEY=value"),
        (f"DATABASE_URL='{URL}", "line 2: the value of DATABASE_URL has unbalanced quotes"),
        (f"DATABASE_URL={URL} {SECRET}", "line 2: the value of DATABASE_URL has unquoted spaces"),
    ],
)
def test_a_bad_line_is_named_by_number_never_by_value(tmp_path: Path, line: str, says: str) -> None:
    path = _env_file(tmp_path, f"# first\n{line}\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={"ORCHESTRATOR_ENV_FILE": str(path)})
    assert says in str(raised.value) and SECRET not in str(raised.value)


def test_a_named_file_that_is_missing_is_an_error_dev_null_is_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(environ={"ORCHESTRATOR_ENV_FILE": str(tmp_path / "absent.env")})
    _env_file(tmp_path, "ORCHESTRATOR_SCALING__MAX_WORKERS=7\n")  # the default file, not read:
    settings = load_settings(environ={"HOME": str(tmp_path), "ORCHESTRATOR_ENV_FILE": "/dev/null"})
    assert settings.scaling.max_workers == 10


def test_cli_env_file_option_and_secrets_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "ORCHESTRATOR_DATABASE__BACKEND", "ORCHESTRATOR_ENV_FILE", "ORCHESTRATOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = _env_file(tmp_path, f"DATABASE_URL='{URL}'\nORCHESTRATOR_DATABASE__BACKEND=postgres\n", name="x.env")
    result = CliRunner().invoke(app, ["--env-file", str(path), "config", "check", "--json"])
    assert result.exit_code == 0, result.output
    assert '"backend": "postgres"' in result.output and '"url": "***"' in result.output
    assert SECRET not in result.output


# --- a cluster node never falls back to an embedded database ----------------------------------------
def test_cluster_detection(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert cluster_reason(home) is None
    assert cluster_reason({**home, "ORCHESTRATOR_CLUSTER": "true"}) == "ORCHESTRATOR_CLUSTER=true"
    (tmp_path / "ray_bootstrap_config.yaml").write_text("cluster_name: x\n")
    assert "ray up" in (cluster_reason(home) or "")
    assert cluster_reason({**home, "ORCHESTRATOR_CLUSTER": "0"}) is None


def test_on_a_cluster_no_database_settings_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ray_bootstrap_config.yaml").write_text("cluster_name: x\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={"HOME": str(tmp_path)})
    (problem,) = raised.value.problems
    assert problem.startswith("database.backend: this is a cluster node (`ray up` set it up")
    assert "never starts an embedded database" in problem and "DATABASE_URL" in problem
    # the env file, once it names the database, is all a command needs
    _env_file(tmp_path, f"DATABASE_URL='{URL}'\nORCHESTRATOR_DATABASE__BACKEND=postgres\n")
    assert load_settings(environ={"HOME": str(tmp_path)}).database.backend is DatabaseBackend.POSTGRES


def test_status_on_a_cluster_without_database_stops_before_starting_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATABASE_URL", "ORCHESTRATOR_DATABASE__BACKEND", "ORCHESTRATOR_ENV_FILE", "ORCHESTRATOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ORCHESTRATOR_CLUSTER", "1")
    monkeypatch.chdir(tmp_path)
    for command in (["status"], ["down"], ["task", "list"], ["migrate"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert "this is a cluster node (ORCHESTRATOR_CLUSTER=1)" in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / ".orchestrator").exists(), "an embedded database was started"
