"""`orchestrator task add` / `task list` on a real Postgres, in both queue profiles.

native: the tasks land in orchestrator.tasks and are claimable. reigh: they land in the app's
public.tasks under a project of the user (the store's insert_tasks refuses there by design), and the
app's own demand function counts them. Bad input: one line naming the option, exit 2, nothing written.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from store.reigh import fixture


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "ORCHESTRATOR_CONFIG", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORCHESTRATOR_ENV_FILE", "/dev/null")  # never the env file of whoever runs the tests
    monkeypatch.setenv("ORCHESTRATOR_CLUSTER", "0")
    monkeypatch.setenv("ORCHESTRATOR_DATABASE__BACKEND", "postgres")


def _run(args: list[str], **env: str) -> Any:
    return CliRunner().invoke(app, args, env=env)


def _ids(output: str) -> list[str]:
    return [line for line in output.splitlines() if line and not line.startswith(("queued", "note"))]


# --- native -----------------------------------------------------------------------------------------
def test_native_add_then_list(database_url: str) -> None:
    first = _run(
        ["task", "add", "--type", "travel_segment", "--user", "u1", "--params", '{"seed": 7}'],
        DATABASE_URL=database_url,
    )
    assert first.exit_code == 0, first.output
    (parent,) = _ids(first.stdout)
    child = _run(
        ["task", "add", "--type", "travel_stitch", "--user", "u1", "--depends-on", parent, "--count", "2"],
        DATABASE_URL=database_url,
    )
    assert child.exit_code == 0, child.output
    children = _ids(child.stdout)
    assert len(children) == 2 and "queued 2 task(s)" in child.stderr
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id, task_type, user_id, params, depends_on, status FROM orchestrator.tasks ORDER BY created_at, id"
        ).fetchall()
    by_id = {r[0]: r for r in rows}
    assert by_id[parent][1:] == ("travel_segment", "u1", {"seed": 7}, None, "Queued")
    assert all(by_id[c][4] == parent and by_id[c][1] == "travel_stitch" for c in children)

    listed = _run(["task", "list", "--json"], DATABASE_URL=database_url)
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert {t["id"] for t in data["tasks"]} == {parent, *children}
    assert data["counts"] == {"Queued": 3}
    table = _run(["task", "list", "--status", "Queued", "--limit", "1"], DATABASE_URL=database_url)
    assert table.exit_code == 0 and parent in table.stdout and children[0] not in table.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--type", "t", "--user", "u", "--params", "{not json"], "--params: not valid JSON"),
        (["--type", "t", "--user", "u", "--params", "[1, 2]"], "--params: must be a JSON object"),
        (["--type", " ", "--user", "u"], "--type: must not be empty"),
        (["--type", "t"], "--user: required"),
        (["--type", "t", "--user", "u", "--count", "0"], "--count: 0 is outside"),
        (["--type", "t", "--user", "u", "--depends-on", "no-such-task"], "--depends-on: no task no-such-task"),
        (["--type", "t", "--user", "u", "--depends-on", "a", "--depends-on", "b"], "--depends-on: the native queue"),
        (["--type", "t", "--user", "u", "--project", str(uuid.uuid4())], "--project: only the reigh"),
        (["--user", "u"], "--type"),
    ],
)
def test_native_bad_input_names_the_option_exit_2(database_url: str, args: list[str], named: str) -> None:
    result = _run(["task", "add", *args], DATABASE_URL=database_url)
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM orchestrator.tasks").fetchone() == (0,)


def test_list_bad_status_exit_2(database_url: str) -> None:
    result = _run(["task", "list", "--status", "Done"], DATABASE_URL=database_url)
    assert result.exit_code == 2 and "--status: 'Done' is not one of Queued" in result.output


def test_unreachable_database_is_one_line_without_the_password() -> None:
    from tests.conftest import free_port

    port = free_port()
    result = _run(
        ["task", "add", "--type", "t", "--user", "u"],
        DATABASE_URL=f"postgresql://bob:hunter2-secret@127.0.0.1:{port}/queue",
        ORCHESTRATOR_DATABASE__CONNECT_TIMEOUT_S="1",
    )
    assert result.exit_code == 1, result.output
    assert f"127.0.0.1:{port}" in result.output and "hunter2" not in result.output
    assert "Traceback" not in result.output


# --- reigh ------------------------------------------------------------------------------------------
def _reigh_user(url: str, projects: int = 1) -> tuple[str, list[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        user = fixture.add_user(conn, credits=100, in_cloud=True)
        made = [str(fixture.add_project(conn, user)) for _ in range(projects)]
        fixture.add_task_type(conn, "travel_segment", "gpu")
        fixture.add_task_type(conn, "openai_prompt", "api")
    return str(user), made


def test_reigh_add_goes_into_the_apps_tasks_and_counts_as_demand(reigh_database_url: str) -> None:
    url = reigh_database_url
    user, (project,) = _reigh_user(url)
    env = {"DATABASE_URL": url, "ORCHESTRATOR_QUEUE__PROFILE": "reigh"}
    first = _run(["task", "add", "--type", "travel_segment", "--user", user, "--params", '{"p": 1}'], **env)
    assert first.exit_code == 0, first.output
    (parent,) = _ids(first.stdout)
    second = _run(
        [
            "task",
            "add",
            "--type",
            "travel_segment",
            "--project",
            project,
            "--depends-on",
            parent,
            "--depends-on",
            parent,
            "--count",
            "2",
        ],
        **env,
    )
    assert second.exit_code == 0, second.output
    children = _ids(second.stdout)
    with psycopg.connect(url) as conn:
        rows = {
            str(r[0]): r[1:]
            for r in conn.execute(
                "SELECT id, task_type, params, status::text, project_id::text, dependant_on FROM public.tasks"
            ).fetchall()
        }
        claimable = conn.execute("SELECT public.count_eligible_tasks_service_role(false, 'gpu')").fetchone()
    assert rows[parent] == ("travel_segment", {"p": 1}, "Queued", project, None)
    assert all(rows[c][4] == [uuid.UUID(parent)] * 2 for c in children)
    assert claimable == (1,)  # the parent; the children wait for it (the app's own rule)

    listed = _run(["task", "list", "--json"], **env)
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert {t["id"]: t["user_id"] for t in data["tasks"]} == {i: user for i in [parent, *children]}

    api = _run(["task", "add", "--type", "openai_prompt", "--user", user], **env)
    assert api.exit_code == 0 and "run type api" in api.stderr


def test_reigh_bad_input_names_the_option_exit_2(reigh_database_url: str) -> None:
    url = reigh_database_url
    user, (p1, _p2) = _reigh_user(url, projects=2)
    other, (foreign,) = _reigh_user(url)
    env = {"DATABASE_URL": url, "ORCHESTRATOR_QUEUE__PROFILE": "reigh"}
    cases = [
        (["--user", user], "--user: user " + user + " has several projects; name one with --project"),
        (["--user", "not-a-uuid"], "--user: 'not-a-uuid' is not a UUID"),
        (["--user", str(uuid.uuid4())], "--user: no user"),
        ([], "--user or --project: one is needed"),
        (["--project", str(uuid.uuid4())], "--project: no project"),
        (["--project", foreign, "--user", user], f"--project: project {foreign} belongs to user {other}"),
        (["--project", p1, "--depends-on", str(uuid.uuid4())], "--depends-on: no task"),
    ]
    for extra, named in cases:
        result = _run(["task", "add", "--type", "travel_segment", *extra], **env)
        assert result.exit_code == 2, (extra, result.output)
        assert named in result.output and "Traceback" not in result.output, (extra, result.output)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM public.tasks").fetchone() == (0,)


def test_reigh_needs_the_apps_postgres() -> None:
    result = _run(
        ["task", "add", "--type", "t", "--user", str(uuid.uuid4())],
        ORCHESTRATOR_QUEUE__PROFILE="reigh",
        ORCHESTRATOR_DATABASE__BACKEND="supabase",
        SUPABASE_URL="http://127.0.0.1:9",
        SUPABASE_SERVICE_ROLE_KEY="k-secret-zzz",
    )
    assert result.exit_code == 2 and "DATABASE_URL" in result.output and "k-secret-zzz" not in result.output


def test_native_over_supabase_rest(database_url: str) -> None:
    """The same commands through the Supabase REST API (the loopback PostgREST stand-in)."""
    from tests.support.postgrest_standin import PostgrestStandin

    with PostgrestStandin(database_url) as standin:
        env = {
            "ORCHESTRATOR_DATABASE__BACKEND": "supabase",
            "SUPABASE_URL": standin.url,
            "SUPABASE_SERVICE_ROLE_KEY": standin.service_key,
        }
        added = _run(["task", "add", "--type", "travel_segment", "--user", "u9", "--count", "2"], **env)
        assert added.exit_code == 0, added.output
        ids = _ids(added.stdout)
        listed = _run(["task", "list", "--json"], **env)
        assert listed.exit_code == 0, listed.output
        assert {t["id"] for t in json.loads(listed.stdout)["tasks"]} == set(ids) and len(ids) == 2
        assert standin.service_key not in added.output + listed.output
