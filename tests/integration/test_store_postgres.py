"""PostgresStore's own parts (notifications, errors without secrets), the factory and `orchestrator migrate`."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from config.settings import DatabaseSettings, OrchestratorSettings
from fleet.models import WorkerState
from orchestrator.cli import app
from store.base import DatabaseUnavailable, Lease, NewTask, Store, StoreError
from store.factory import open_store, open_store_from_env
from store.postgres import PostgresStore
from store.supabase import SupabaseStore
from tests.conftest import free_port


def test_wait_for_task_change(pg_store: PostgresStore, database_url: str) -> None:
    assert pg_store.wait_for_task_change(0.05) is False  # starts listening; nothing happened

    def insert_later() -> None:
        time.sleep(0.2)
        other = PostgresStore(database_url, max_size=1)
        other.insert_tasks([NewTask(task_type="t", user_id="u")])
        other.close()

    thread = threading.Thread(target=insert_later)
    thread.start()
    assert pg_store.wait_for_task_change(10.0) is True
    thread.join()
    assert pg_store.wait_for_task_change(0.05) is False  # the burst was folded into one wake-up
    pg_store.create_worker("w", reason="t")
    pg_store.transition_worker("w", WorkerState.SPAWNING, WorkerState.ACTIVE, "t")
    task = pg_store.claim_next_task("w")
    assert task is not None  # a claim changes no decision: it wakes nobody
    assert pg_store.wait_for_task_change(0.3) is False
    # a task waiting for an unfinished one is not claimable: no wake-up either
    pg_store.insert_tasks([NewTask(task_type="t", user_id="u", depends_on=task.id)])
    assert pg_store.wait_for_task_change(0.3) is False
    assert pg_store.complete_task(task.id, "w")  # a task ends (and its dependent becomes claimable)
    assert pg_store.wait_for_task_change(5.0) is True
    assert pg_store.wait_for_task_change(0.05) is False


def test_lease_contenders_at_once_get_one_leader(database_url: str) -> None:
    stores = [PostgresStore(database_url, max_size=1) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    leases: list[Lease] = []

    def contend(index: int) -> None:
        barrier.wait()
        leases.append(stores[index].acquire_leader_lease("scaler", f"host-{index}", 30))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    winners = [lease for lease in leases if lease.acquired]
    assert len(leases) == 6 and len(winners) == 1
    assert {lease.holder for lease in leases} == {winners[0].holder}
    assert {lease.epoch for lease in leases} == {winners[0].epoch}


def test_unreachable_postgres_is_one_line_without_password() -> None:
    url = f"postgresql://bob:hunter2-secret@127.0.0.1:{free_port()}/queue"
    with pytest.raises(DatabaseUnavailable) as caught:
        PostgresStore(url, connect_timeout_s=1)
    message = str(caught.value)
    assert "127.0.0.1" in message and "/queue" in message and "hunter2" not in message
    assert "\n" not in message and "unreachable" in message


def test_describe_and_repr_hide_the_password(database_url: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    with_password = psycopg.conninfo.make_conninfo(database_url, password="pw-secret-zzz")
    store = PostgresStore(with_password, max_size=1)
    try:
        assert "pw-secret-zzz" not in repr(store) and "pw-secret-zzz" not in store.describe()
        assert str(params["dbname"]) in store.describe()
    finally:
        store.close()


def test_sql_errors_are_store_errors(pg_store: PostgresStore) -> None:
    with pytest.raises(StoreError, match="per_user_limit"):
        pg_store.configure_queue(per_user_limit=0, max_task_attempts=3)


def test_open_store_picks_the_backend(database_url: str, tmp_path: Path) -> None:
    direct = open_store(OrchestratorSettings(database=DatabaseSettings(backend="postgres", url=database_url)))
    assert isinstance(direct, PostgresStore) and isinstance(direct, Store)
    direct.close()
    supabase = open_store(
        OrchestratorSettings(
            database=DatabaseSettings(
                backend="supabase", supabase_url="http://127.0.0.1:9", supabase_service_role_key="k-zzz"
            )
        )
    )
    assert isinstance(supabase, SupabaseStore) and "k-zzz" not in repr(supabase)
    supabase.close()


def test_open_store_from_env(database_url: str) -> None:
    store = open_store_from_env({"DATABASE_URL": database_url})
    assert isinstance(store, PostgresStore)
    store.close()
    store = open_store_from_env({"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "k"})
    assert isinstance(store, SupabaseStore)
    store.close()
    with pytest.raises(StoreError, match="DATABASE_URL"):
        open_store_from_env({})


def test_embedded_store_outlives_its_opener_and_is_shared(tmp_path: Path) -> None:
    from store.embedded import ensure_embedded, stop_embedded

    pgdata = tmp_path / "state" / "pgdata"
    settings = OrchestratorSettings(database=DatabaseSettings(embedded_dir=pgdata))
    try:
        first = open_store(settings)  # starts the server and migrates it
        first.insert_tasks([NewTask(task_type="t", user_id="u")])
        first.close()
        assert ensure_embedded(pgdata)  # still running: found, not started
        second = open_store(settings)
        assert second.task_counts() == {"Queued": 1}
        second.close()
    finally:
        stop_embedded(pgdata)


def _cli_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name in ("DATABASE_URL", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "ORCHESTRATOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The backend is said, never guessed from which variable is set.
    if "DATABASE_URL" in env:
        monkeypatch.setenv("ORCHESTRATOR_DATABASE__BACKEND", "postgres")
    elif "SUPABASE_URL" in env:
        monkeypatch.setenv("ORCHESTRATOR_DATABASE__BACKEND", "supabase")


def test_migrate_command(pg_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    _cli_env(monkeypatch, DATABASE_URL=psycopg.conninfo.make_conninfo(pg_server_url, dbname=name))
    runner = CliRunner()
    first = runner.invoke(app, ["migrate"])
    assert first.exit_code == 0, first.output
    assert "applied 0001_schema" in first.output and "applied native/0020_tasks" in first.output
    second = runner.invoke(app, ["migrate"])
    assert second.exit_code == 0 and "nothing to apply" in second.output


def test_migrate_sql_touches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _cli_env(monkeypatch, DATABASE_URL=f"postgresql://x:y@127.0.0.1:{free_port()}/none")
    result = CliRunner().invoke(app, ["migrate", "--sql"])
    assert result.exit_code == 0
    assert "CREATE TABLE IF NOT EXISTS tasks" in result.output and "claim_next_task" in result.output


def test_migrate_unreachable_is_one_line_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    _cli_env(monkeypatch, DATABASE_URL=f"postgresql://bob:hunter2-secret@127.0.0.1:{port}/queue")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert f"127.0.0.1:{port}/queue" in lines[0] and "hunter2" not in result.output
    assert "Traceback" not in result.output


def test_migrate_refuses_supabase_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    _cli_env(monkeypatch, SUPABASE_URL="http://127.0.0.1:9", SUPABASE_SERVICE_ROLE_KEY="k-zzz")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2 and "--sql" in result.output and "k-zzz" not in result.output
