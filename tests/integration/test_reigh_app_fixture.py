"""The Reigh-shaped app database (store/reigh/app_fixture.sql) and the Headless-Wan2GP stand-in.

Each test gets a fresh database of its own in the session's Postgres server with only the app
fixture applied (none of the orchestrator's migrations), so what passes here is what an
orchestrator will find in a live Reigh project. The stand-in runs as real subprocesses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from store.reigh.fixture import add_project, add_task, add_task_type, add_user, apply_app_fixture
from tests.support.polling import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 0.5


@pytest.fixture
def reigh_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database with only the app fixture applied; dropped afterwards."""
    name = f"reigh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)
    try:
        apply_app_fixture(url)
        yield url
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(reigh_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(reigh_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


Conn = psycopg.Connection[dict[str, Any]]


# --- helpers -----------------------------------------------------------------------------------
def _user_project(conn: Conn, *, credits: int = 10, in_cloud: bool | None = None) -> uuid.UUID:
    return add_project(conn, add_user(conn, credits=credits, in_cloud=in_cloud))


def _eligible(conn: Conn, include_active: bool = False, run_type: str | None = "gpu") -> int:
    row = conn.execute("SELECT count_eligible_tasks_service_role(%s, %s) AS n", (include_active, run_type)).fetchone()
    assert row is not None
    return int(row["n"])


def _breakdown(conn: Conn, run_type: str | None = "gpu") -> dict[str, int]:
    row = conn.execute("SELECT * FROM count_queued_tasks_breakdown_service_role(%s)", (run_type,)).fetchone()
    assert row is not None
    return dict(row)


def _claim(conn: Conn, worker_id: str, run_type: str | None = "gpu") -> dict[str, Any] | None:
    return conn.execute(
        "SELECT * FROM claim_next_task_service_role(p_worker_id => %s, p_run_type => %s)", (worker_id, run_type)
    ).fetchone()


def _beat(conn: Conn, worker_id: str, status: str = "active", logs: list[Any] | None = None, **vram: int) -> Any:
    row = conn.execute(
        "SELECT func_worker_heartbeat_with_logs(worker_id_param => %s, vram_total_mb_param => %s,"
        " vram_used_mb_param => %s, logs_param => %s, status_param => %s) AS answer",
        (worker_id, vram.get("total"), vram.get("used"), Jsonb(logs or []), status),
    ).fetchone()
    assert row is not None
    return row["answer"]


def _scalar(conn: Conn, query: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(query, params or None).fetchone()  # no params: '%' is a plain character
    assert row is not None
    return next(iter(row.values()))


def _task(conn: Conn, task_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM tasks WHERE id = %s", (task_id,)).fetchone()
    assert row is not None
    return row


def _worker(conn: Conn, worker_id: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM workers WHERE id = %s", (worker_id,)).fetchone()


def _set_status(conn: Conn, task_id: uuid.UUID, status: str, **columns: Any) -> None:
    assignments = "".join(f", {name} = %({name})s" for name in columns)
    conn.execute(
        f"UPDATE tasks SET status = %(status)s{assignments} WHERE id = %(id)s",
        {**columns, "status": status, "id": task_id},
    )


# --- schema ------------------------------------------------------------------------------------
def test_fixture_applies_twice_and_has_the_contract_signatures(reigh_url: str, conn: Conn) -> None:
    apply_app_fixture(reigh_url)  # idempotent
    rows = conn.execute(
        "SELECT p.proname, pg_get_function_arguments(p.oid) AS args, pg_get_function_result(p.oid) AS result"
        " FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace"
    ).fetchall()
    functions = {r["proname"]: (r["args"], r["result"]) for r in rows}
    assert functions["get_task_run_type"] == ("p_task_type text", "text")
    assert functions["count_eligible_tasks_service_role"] == (
        "p_include_active boolean DEFAULT false, p_run_type text DEFAULT NULL::text",
        "integer",
    )
    assert functions["count_queued_tasks_breakdown_service_role"][1] == (
        "TABLE(claimable_now integer, blocked_by_capacity integer, blocked_by_deps integer,"
        " blocked_by_settings integer, total_queued integer)"
    )
    assert functions["per_user_capacity_stats_service_role"] == (
        "",
        "TABLE(user_id uuid, credits numeric, queued_tasks bigint, in_progress_tasks bigint,"
        " allows_cloud boolean, at_limit boolean)",
    )
    assert functions["claim_next_task_service_role"] == (
        "p_worker_id text, p_include_active boolean DEFAULT false, p_run_type text DEFAULT NULL::text,"
        " p_same_model_only boolean DEFAULT false, p_max_task_wait_minutes integer DEFAULT 5",
        "TABLE(task_id uuid, params jsonb, task_type text, project_id uuid, user_id uuid)",
    )
    assert functions["func_worker_heartbeat_with_logs"] == (
        "worker_id_param text, vram_total_mb_param integer DEFAULT NULL::integer, vram_used_mb_param integer"
        " DEFAULT NULL::integer, logs_param jsonb DEFAULT '[]'::jsonb, current_task_id_param uuid DEFAULT NULL::uuid,"
        " status_param text DEFAULT 'active'::text",
        "jsonb",
    )
    assert functions["func_insert_logs_batch"] == ("logs jsonb", "jsonb")
    assert functions["auto_fail_stale_tasks"] == ("", "integer")
    labels = conn.execute("SELECT enum_range(NULL::task_status)::text AS r").fetchone()
    assert labels == {"r": '{Queued,"In Progress",Complete,Failed,Cancelled}'}
    # The looser check of a live database: 'crashed' is accepted, anything else is not.
    conn.execute("INSERT INTO workers (id, instance_type, status) VALUES ('w-crashed', 'x', 'crashed')")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO workers (id, instance_type, status) VALUES ('w-bad', 'x', 'spawning')")
    # ON DELETE: a project's tasks go with it; a deleted worker leaves its tasks without one.
    project = _user_project(conn)
    task = add_task(conn, project_id=project, task_type="t", params={})
    _set_status(conn, task, "In Progress", worker_id="w-crashed")
    conn.execute("DELETE FROM workers WHERE id = 'w-crashed'")
    assert _task(conn, task)["worker_id"] is None
    conn.execute("DELETE FROM projects WHERE id = %s", (project,))
    assert conn.execute("SELECT count(*) AS n FROM tasks").fetchone() == {"n": 0}


# --- demand ------------------------------------------------------------------------------------
def test_only_users_with_credits_and_cloud_allowed_count(conn: Conn) -> None:
    ok = _user_project(conn, credits=10)  # setting absent: cloud allowed
    explicit = _user_project(conn, credits=1, in_cloud=True)
    broke = _user_project(conn, credits=0)
    opted_out = _user_project(conn, credits=10, in_cloud=False)
    for project, n in ((ok, 3), (explicit, 1), (broke, 2), (opted_out, 2)):
        for _ in range(n):
            add_task(conn, project_id=project, task_type="wan_2_2_t2i", params={})
    assert _eligible(conn) == 4
    assert _eligible(conn, include_active=True) == 4
    assert _breakdown(conn) == {
        "claimable_now": 4,
        "blocked_by_capacity": 0,
        "blocked_by_deps": 0,
        "blocked_by_settings": 4,
        "total_queued": 8,
    }
    stats = conn.execute("SELECT * FROM per_user_capacity_stats_service_role()").fetchall()
    by_credits_cloud = sorted((int(s["credits"]), s["allows_cloud"], s["queued_tasks"]) for s in stats)
    assert by_credits_cloud == [(0, True, 2), (1, True, 1), (10, False, 2), (10, True, 3)]
    _beat(conn, "w1")
    claimed = [_claim(conn, "w1") for _ in range(5)]
    assert sum(c is not None for c in claimed) == 4  # nothing of the broke or opted-out users


def test_dependencies_block_until_every_parent_is_complete(conn: Conn) -> None:
    project = _user_project(conn)
    a = add_task(conn, project_id=project, task_type="t", params={})
    b = add_task(conn, project_id=project, task_type="t", params={})
    child = add_task(conn, project_id=project, task_type="t", params={}, dependant_on=[a, b])
    orphan = add_task(conn, project_id=project, task_type="t", params={}, dependant_on=[uuid.uuid4()])
    assert _eligible(conn) == 2
    assert _breakdown(conn)["blocked_by_deps"] == 2  # the child, and the task whose parent does not exist
    _set_status(conn, a, "Complete")
    assert _eligible(conn) == 1  # b only: the child still waits for b
    _beat(conn, "w1")
    got = _claim(conn, "w1")
    assert got is not None and got["task_id"] == b
    assert _claim(conn, "w1") is None
    _set_status(conn, b, "Failed")
    assert _eligible(conn) == 0  # a failed parent blocks for good
    _set_status(conn, b, "Complete")
    assert _eligible(conn) == 1
    got = _claim(conn, "w1")
    assert got is not None and got["task_id"] == child
    assert _task(conn, orphan)["status"] == "Queued"


def test_per_user_limit_of_five(conn: Conn) -> None:
    project = _user_project(conn)
    for _ in range(7):
        add_task(conn, project_id=project, task_type="travel_segment", params={})
    assert (_eligible(conn), _eligible(conn, include_active=True)) == (5, 5)
    _beat(conn, "w1")
    for _ in range(3):
        assert _claim(conn, "w1") is not None
    assert (_eligible(conn), _eligible(conn, include_active=True)) == (2, 5)
    assert _breakdown(conn) == {
        "claimable_now": 2,
        "blocked_by_capacity": 2,
        "blocked_by_deps": 0,
        "blocked_by_settings": 0,
        "total_queued": 4,
    }
    for _ in range(2):
        assert _claim(conn, "w1") is not None
    assert _claim(conn, "w1") is None  # at the limit
    # A user at the limit is not eligible at all, so even with p_include_active their five running
    # tasks count for nothing (the contract's formula).
    assert (_eligible(conn), _eligible(conn, include_active=True)) == (0, 0)
    assert _breakdown(conn)["blocked_by_capacity"] == 2
    [stats] = conn.execute("SELECT * FROM per_user_capacity_stats_service_role()").fetchall()
    assert (stats["queued_tasks"], stats["in_progress_tasks"], stats["at_limit"]) == (2, 5, True)

    # Tasks of an '%orchestrator%' type do not count against the limit.
    other = _user_project(conn)
    for _ in range(5):
        add_task(conn, project_id=other, task_type="travel_orchestrator", params={}, status="In Progress")
    add_task(conn, project_id=other, task_type="travel_segment", params={})
    assert _eligible(conn) == 1


def test_run_type_api_is_excluded_with_gpu(conn: Conn) -> None:
    add_task_type(conn, "qwen_image_edit", "gpu")
    add_task_type(conn, "image-upscale", "api")
    project = _user_project(conn)
    gpu = add_task(conn, project_id=project, task_type="qwen_image_edit", params={})
    api = add_task(conn, project_id=project, task_type="image-upscale", params={})
    unknown = add_task(conn, project_id=project, task_type="not_in_task_types", params={})
    run_types = conn.execute(
        "SELECT get_task_run_type('qwen_image_edit') AS g, get_task_run_type('image-upscale') AS a,"
        " get_task_run_type('not_in_task_types') AS u"
    ).fetchone()
    assert run_types == {"g": "gpu", "a": "api", "u": "gpu"}
    assert (_eligible(conn, run_type="gpu"), _eligible(conn, run_type="api"), _eligible(conn, run_type=None)) == (
        2,
        1,
        3,
    )
    assert _breakdown(conn, "gpu")["total_queued"] == 2
    _beat(conn, "w1")
    claimed = {c["task_id"] for c in (_claim(conn, "w1"), _claim(conn, "w1"), _claim(conn, "w1")) if c is not None}
    assert claimed == {gpu, unknown}
    assert _task(conn, api)["status"] == "Queued"


def test_breakdown_numbers(conn: Conn) -> None:
    add_task_type(conn, "image-upscale", "api")
    busy = _user_project(conn)
    ready = [add_task(conn, project_id=busy, task_type="travel_segment", params={}) for _ in range(7)]
    add_task(conn, project_id=busy, task_type="travel_segment", params={}, dependant_on=[ready[0]])
    add_task(conn, project_id=busy, task_type="image-upscale", params={})
    for _ in range(2):
        add_task(conn, project_id=_user_project(conn, credits=0), task_type="travel_segment", params={})
    add_task(conn, project_id=_user_project(conn, in_cloud=False), task_type="travel_segment", params={})
    add_task(conn, project_id=busy, task_type="travel_segment", params={}, status="Complete")  # not queued
    assert _breakdown(conn, "gpu") == {
        "claimable_now": 5,
        "blocked_by_capacity": 2,
        "blocked_by_deps": 1,
        "blocked_by_settings": 3,
        "total_queued": 11,
    }
    assert _breakdown(conn, None) == {
        "claimable_now": 5,
        "blocked_by_capacity": 3,
        "blocked_by_deps": 1,
        "blocked_by_settings": 3,
        "total_queued": 12,
    }
    assert _breakdown(conn, "api")["claimable_now"] == 1


def test_claim_prefers_the_workers_model_until_a_task_waited_too_long(conn: Conn) -> None:
    project = _user_project(conn)
    other_model = add_task(conn, project_id=project, task_type="t", params={"model_name": "flux"})
    same_model = add_task(conn, project_id=project, task_type="t", params={"model_name": "wan_2_2"})
    _beat(conn, "w1")
    conn.execute("UPDATE workers SET current_model = 'wan_2_2' WHERE id = 'w1'")
    got = _claim(conn, "w1")
    assert got is not None and got["task_id"] == same_model
    _set_status(conn, same_model, "Queued")
    conn.execute("UPDATE tasks SET created_at = now() - interval '6 minutes' WHERE id = %s", (other_model,))
    got = _claim(conn, "w1")
    assert got is not None and got["task_id"] == other_model  # waited more than p_max_task_wait_minutes


def test_two_concurrent_claims_can_return_the_same_task(reigh_url: str, conn: Conn) -> None:
    """The app's claim has no SKIP LOCKED and no status re-check: its bug, reproduced on purpose."""
    project = _user_project(conn)
    task = add_task(conn, project_id=project, task_type="t", params={})
    _beat(conn, "w-a")
    _beat(conn, "w-b")
    results: dict[str, Any] = {}
    with (
        psycopg.connect(reigh_url, row_factory=dict_row) as first,
        psycopg.connect(reigh_url, autocommit=True) as second,
    ):
        first_claim = _claim(first, "w-a")  # in an open transaction: the row is locked, not committed
        second_pid = second.info.backend_pid

        def claim_second() -> None:
            results["second"] = second.execute(
                "SELECT task_id FROM claim_next_task_service_role(p_worker_id => 'w-b', p_run_type => 'gpu')"
            ).fetchone()

        thread = threading.Thread(target=claim_second)
        thread.start()
        wait_for(
            lambda: conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (second_pid,)
            ).fetchone(),
            timeout_s=10,
            message="the second claim waits for the first one's row lock",
        )
        first.commit()
        thread.join(10)
    assert first_claim is not None and first_claim["task_id"] == task
    assert results["second"] == (task,)  # the same task, claimed twice
    assert _task(conn, task)["worker_id"] == "w-b"


# --- heartbeat and logs ------------------------------------------------------------------------
def test_heartbeat_creates_and_updates_the_worker_row(conn: Conn) -> None:
    logs = [{"message": "loaded model", "level": "info"}, {"level": "INFO"}, "not an object"]
    answer = _beat(conn, "w-ext", logs=logs, total=24576, used=1000)
    assert (answer["logs_inserted"], answer["logs_skipped"]) == (1, 2)
    row = _worker(conn, "w-ext")
    assert row is not None
    assert (row["instance_type"], row["status"]) == ("external", "active")
    assert row["last_heartbeat"] is not None
    assert (row["metadata"]["vram_total_mb"], row["metadata"]["vram_used_mb"]) == (24576, 1000)
    log = conn.execute("SELECT * FROM system_logs").fetchone()
    assert log is not None
    assert (log["source_type"], log["source_id"], log["worker_id"], log["log_level"]) == (
        "worker",
        "w-ext",
        "w-ext",
        "INFO",
    )

    # A row the orchestrator wrote first keeps its instance type; every beat overwrites the status.
    conn.execute(
        "INSERT INTO workers (id, instance_type, status, metadata) VALUES"
        " ('gpu-20251016_175506-a6a03b7b', 'NVIDIA GeForce RTX 4090', 'inactive', %s)",
        (Jsonb({"orchestrator_status": "spawning"}),),
    )
    _beat(conn, "gpu-20251016_175506-a6a03b7b", used=2000)
    row = _worker(conn, "gpu-20251016_175506-a6a03b7b")
    assert row is not None
    assert (row["instance_type"], row["status"]) == ("NVIDIA GeForce RTX 4090", "active")
    assert row["metadata"]["orchestrator_status"] == "spawning" and row["metadata"]["vram_used_mb"] == 2000
    before = row["last_heartbeat"]
    conn.execute("UPDATE workers SET status = 'terminated' WHERE id = 'gpu-20251016_175506-a6a03b7b'")
    _beat(conn, "gpu-20251016_175506-a6a03b7b")
    row = _worker(conn, "gpu-20251016_175506-a6a03b7b")
    assert row is not None and row["status"] == "active" and row["last_heartbeat"] > before
    assert row["metadata"]["vram_used_mb"] == 2000  # no figures sent: the last ones stay


def test_crashed_requeues_with_one_more_attempt_and_fails_at_three(conn: Conn) -> None:
    project = _user_project(conn)
    _beat(conn, "w-crash")
    _beat(conn, "w-other")
    fresh, second, third = (add_task(conn, project_id=project, task_type="t", params={}) for _ in range(3))
    elsewhere = add_task(conn, project_id=project, task_type="t", params={})
    for task, attempts in ((fresh, 0), (second, 2), (third, 3)):
        _set_status(conn, task, "In Progress", worker_id="w-crash", attempts=attempts, generation_started_at="now")
    _set_status(conn, elsewhere, "In Progress", worker_id="w-other")
    answer = _beat(conn, "w-crash", status="crashed")
    assert (answer["tasks_requeued"], answer["tasks_failed"]) == (2, 1)
    worker = _worker(conn, "w-crash")
    assert worker is not None and worker["status"] == "crashed"
    for task, attempts in ((fresh, 1), (second, 3)):
        row = _task(conn, task)
        assert (row["status"], row["attempts"], row["worker_id"], row["generation_started_at"]) == (
            "Queued",
            attempts,
            None,
            None,
        )
    assert _task(conn, third)["status"] == "Failed" and "crashed" in _task(conn, third)["error_message"]
    assert _task(conn, elsewhere)["status"] == "In Progress"
    # The task now at 3 attempts fails the next time its worker crashes.
    _set_status(conn, second, "In Progress", worker_id="w-crash")
    _beat(conn, "w-crash", status="crashed")
    assert _task(conn, second)["status"] == "Failed"


def test_insert_logs_batch_skips_and_counts_bad_rows(conn: Conn) -> None:
    good = {
        "timestamp": "2025-10-16T17:55:06Z",
        "source_type": "orchestrator_gpu",
        "source_id": "orchestrator-1",
        "log_level": "INFO",
        "message": "cycle done",
        "cycle_number": 42,
        "worker_id": "gpu-1",
        "task_id": str(uuid.uuid4()),
        "metadata": {"spawned": 1},
    }
    bad = [
        {**good, "log_level": "LOUD"},
        {**good, "task_id": "not-a-uuid"},
        {key: value for key, value in good.items() if key != "message"},
        "a string",
    ]
    row = conn.execute("SELECT func_insert_logs_batch(%s) AS r", (Jsonb([good, *bad]),)).fetchone()
    assert row is not None
    assert (row["r"]["inserted"], row["r"]["errors"]) == (1, 4)
    assert [d["index"] for d in row["r"]["error_details"]] == [1, 2, 3, 4]
    stored = conn.execute("SELECT * FROM system_logs").fetchall()
    assert len(stored) == 1 and stored[0]["cycle_number"] == 42 and stored[0]["metadata"] == {"spawned": 1}
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT func_insert_logs_batch('{}'::jsonb)")


def test_auto_fail_stale_tasks(conn: Conn) -> None:
    project = _user_project(conn)
    stale = add_task(conn, project_id=project, task_type="t", params={}, status="In Progress")
    recent = add_task(conn, project_id=project, task_type="t", params={}, status="In Progress")
    conn.execute("UPDATE tasks SET generation_started_at = now() - interval '3 hours' WHERE id = %s", (stale,))
    conn.execute("UPDATE tasks SET generation_started_at = now() - interval '10 minutes' WHERE id = %s", (recent,))
    assert conn.execute("SELECT auto_fail_stale_tasks() AS n").fetchone() == {"n": 1}
    assert (_task(conn, stale)["status"], _task(conn, recent)["status"]) == ("Failed", "In Progress")


# --- the stand-in worker, as real processes ----------------------------------------------------
class _Standins:
    """Starts stand-in processes; kills the ones still running at the end (by their own Popen)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        worker_id: str,
        *,
        database_url: str | None = None,
        supabase: tuple[str, str] = ("http://127.0.0.1:9", "unused-key"),
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SUPABASE_", "WORKER_"))}
        environ.update({"REIGH_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S), "REIGH_POLL_INTERVAL_S": "0.2"})
        if database_url:
            environ["DATABASE_URL"] = database_url
        environ.update(env or {})
        argv = [sys.executable, "-m", "worker.reigh_standin", "--supabase-url", supabase[0]]
        argv += ["--supabase-access-token", supabase[1], "--worker", worker_id]
        out = (self.tmp_path / f"{worker_id}.out").open("wb")
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        self.procs[worker_id] = proc
        return proc

    def output(self, worker_id: str) -> str:
        return (self.tmp_path / f"{worker_id}.out").read_text(errors="replace")

    def outputs(self) -> str:
        return "\n".join(f"--- {w}\n{self.output(w)[-3000:]}" for w in self.procs)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def standins(tmp_path: Path) -> Iterator[_Standins]:
    started = _Standins(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def _wait_tasks(
    conn: Conn, ids: list[uuid.UUID], status: str, explain: Callable[[], str], timeout_s: float = 60
) -> None:
    wait_for(
        lambda: _scalar(
            conn, "SELECT count(*) = %s FROM tasks WHERE id = ANY(%s) AND status = %s", (len(ids), ids, status)
        ),
        timeout_s=timeout_s,
        message=f"{len(ids)} tasks {status}",
        explain=explain,
    )


def test_two_standins_complete_ten_tasks_with_dependencies(reigh_url: str, conn: Conn, standins: _Standins) -> None:
    password = "pw-never-printed-7f3a"
    url = psycopg.conninfo.make_conninfo(reigh_url, password=password)
    # Test-only: record every claim, and whether all its parents were Complete at that moment. The
    # app's claim can hand one task to both workers (no SKIP LOCKED), so the tasks' final
    # timestamps cannot show the order; this can.
    conn.execute(
        """
        CREATE TABLE test_claims (task_id uuid, worker_id text, parents_complete boolean);
        CREATE FUNCTION test_record_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO test_claims VALUES (NEW.id, NEW.worker_id, NOT EXISTS (
                SELECT 1 FROM unnest(coalesce(NEW.dependant_on, '{}')) AS d (id)
                LEFT JOIN tasks parent ON parent.id = d.id
                WHERE parent.status IS DISTINCT FROM 'Complete'));
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_record_claim AFTER UPDATE OF status ON tasks
            FOR EACH ROW WHEN (NEW.status = 'In Progress') EXECUTE FUNCTION test_record_claim();
        """
    )
    for worker_id in ("reigh-a", "reigh-b"):
        standins.start(worker_id, database_url=url)
    wait_for(
        lambda: _scalar(conn, "SELECT count(*) = 2 FROM workers WHERE last_heartbeat IS NOT NULL"),
        timeout_s=30,
        message="both stand-ins heartbeat",
        explain=standins.outputs,
    )
    project = _user_project(conn)

    def task(*parents: uuid.UUID) -> uuid.UUID:
        return add_task(
            conn, project_id=project, task_type="travel_segment", params={"duration_s": 0.3}, dependant_on=parents
        )

    r1, r2, r3, r4 = task(), task(), task(), task()
    c1 = task(r1, r2)
    c2 = task(r3)
    c3 = task(c1, c2)
    c4 = task(r4, c1)
    c5 = task(c3, c4)
    c6 = task(c5, r2)
    ids = [r1, r2, r3, r4, c1, c2, c3, c4, c5, c6]
    _wait_tasks(conn, ids, "Complete", standins.outputs)

    for row in conn.execute("SELECT * FROM tasks WHERE id = ANY(%s)", (ids,)).fetchall():
        assert row["output_location"] and row["generation_processed_at"] and row["updated_at"]
    claims = conn.execute("SELECT * FROM test_claims").fetchall()
    assert {c["task_id"] for c in claims} == set(ids)
    assert all(c["parents_complete"] for c in claims), claims
    assert {c["worker_id"] for c in claims} == {"reigh-a", "reigh-b"}
    # Their log lines arrive with the heartbeats, as source_type 'worker', tagged with the task.
    wait_for(
        lambda: _scalar(
            conn,
            "SELECT count(DISTINCT worker_id) = 2 FROM system_logs"
            " WHERE source_type = 'worker' AND task_id IS NOT NULL AND message LIKE 'completed task%'",
        ),
        timeout_s=10,
        message="log lines shipped by both heartbeats",
    )
    for worker_id in ("reigh-a", "reigh-b"):
        assert password not in standins.output(worker_id)
    logged = conn.execute("SELECT string_agg(message, ' ') AS m FROM system_logs").fetchone()
    assert logged is not None and password not in logged["m"]


def test_standin_killed_mid_task_leaves_it_in_progress_until_the_guardian_reports(
    reigh_url: str, conn: Conn, standins: _Standins
) -> None:
    project = _user_project(conn)
    task = add_task(conn, project_id=project, task_type="travel_segment", params={"duration_s": 60})
    proc = standins.start("reigh-kill", database_url=reigh_url)
    wait_for(lambda: _task(conn, task)["worker_id"] == "reigh-kill", timeout_s=30, explain=standins.outputs)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    conn.execute("SELECT pg_sleep(%s)", (HEARTBEAT_S,))  # a beat already sent may still commit
    worker = _worker(conn, "reigh-kill")
    assert worker is not None
    last = worker["last_heartbeat"]
    # Nothing cooperates: no requeue, no status change, and no heartbeat any more.
    conn.execute("SELECT pg_sleep(%s)", (HEARTBEAT_S * 4,))
    worker = _worker(conn, "reigh-kill")
    assert worker is not None and (worker["last_heartbeat"], worker["status"]) == (last, "active")
    assert (_task(conn, task)["status"], _task(conn, task)["worker_id"]) == ("In Progress", "reigh-kill")

    # The guardian's last word: one 'crashed' beat, which requeues the task with one more attempt.
    guardian = standins.start("reigh-kill", database_url=reigh_url, env={"REIGH_REPORT_CRASHED": "1"})
    assert guardian.wait(30) == 0, standins.outputs()
    row = _task(conn, task)
    assert (row["status"], row["attempts"], row["worker_id"]) == ("Queued", 1, None)
    worker = _worker(conn, "reigh-kill")
    assert worker is not None and worker["status"] == "crashed"


def test_standin_fails_tasks_exits_like_an_oom_kill_and_dies_on_sigterm(
    reigh_url: str, conn: Conn, standins: _Standins
) -> None:
    project = _user_project(conn)
    failing = add_task(conn, project_id=project, task_type="t", params={"duration_s": 0.1, "fail": True})
    oom = add_task(conn, project_id=project, task_type="t", params={"exit_pod": True})
    conn.execute("UPDATE tasks SET created_at = created_at + interval '1 second' WHERE id = %s", (oom,))
    proc = standins.start("reigh-oom", database_url=reigh_url)
    assert proc.wait(60) == 137, standins.outputs()
    row = _task(conn, failing)
    assert row["status"] == "Failed" and "params.fail" in row["error_message"]
    assert row["output_location"] == row["error_message"]
    assert (_task(conn, oom)["status"], _task(conn, oom)["worker_id"]) == ("In Progress", "reigh-oom")

    held = add_task(conn, project_id=project, task_type="t", params={"duration_s": 60})
    proc = standins.start("reigh-term", database_url=reigh_url)
    wait_for(lambda: _task(conn, held)["worker_id"] == "reigh-term", timeout_s=30, explain=standins.outputs)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == -signal.SIGTERM  # at once, and the task stays with it
    assert _task(conn, held)["status"] == "In Progress"


def test_standin_refuses_to_start_without_database_settings(standins: _Standins) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "worker.reigh_standin", "--worker", "w"],
        cwd=REPO_ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SUPABASE_"))},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "DATABASE_URL" in proc.stderr


def test_standin_over_supabase_rpc_heartbeats_and_claims(reigh_url: str, conn: Conn, standins: _Standins) -> None:
    """supabase-py mode against the loopback PostgREST stand-in (which serves only `rpc`).

    Heartbeat and claim are rpc calls and work; completion goes through PostgREST's `tasks` table
    endpoint (a real Supabase has it, the stand-in does not), so here the task stays In Progress
    and the stand-in reports the failed update.
    """
    from tests.support.postgrest_standin import PostgrestStandin

    key = "service-role-key-never-printed-91c2"
    project = _user_project(conn)
    task = add_task(conn, project_id=project, task_type="travel_segment", params={"duration_s": 0.1})
    with PostgrestStandin(reigh_url, service_key=key) as postgrest:
        standins.start("reigh-sb", supabase=(postgrest.url, key))
        wait_for(lambda: _task(conn, task)["worker_id"] == "reigh-sb", timeout_s=30, explain=standins.outputs)
        wait_for(
            lambda: "claim or task update failed" in standins.output("reigh-sb"), timeout_s=30, explain=standins.outputs
        )
        wait_for(
            lambda: conn.execute(
                "SELECT 1 FROM system_logs WHERE worker_id = 'reigh-sb' AND task_id = %s", (task,)
            ).fetchone(),
            timeout_s=10,
            message="log lines shipped through the rpc heartbeat",
        )
        assert "func_worker_heartbeat_with_logs" in postgrest.calls
        assert "claim_next_task_service_role" in postgrest.calls
    worker = _worker(conn, "reigh-sb")
    assert worker is not None and (worker["instance_type"], worker["status"]) == ("external", "active")
    assert _task(conn, task)["status"] == "In Progress"
    assert key not in standins.output("reigh-sb")
