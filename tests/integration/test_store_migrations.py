"""Migrations: applied once, safe twice and from several processes at once; the schema's guarantees."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from store.migrate import applied_migrations, apply_migrations, load_migrations, render_sql

TABLES = [
    "tasks",
    "workers",
    "worker_events",
    "scaling_decisions",
    "system_logs",
    "orchestrator_leases",
    "queue_settings",
    "schema_migrations",
]


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    name = f"e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0'.encode())
    yield psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)


def test_apply_once_then_nothing(empty_database_url: str) -> None:
    names = [m.name for m in load_migrations()]
    assert names == sorted(names) and names[:2] == ["0001_schema", "0002_functions"]
    assert applied_migrations(empty_database_url) == []
    assert apply_migrations(empty_database_url) == names
    assert apply_migrations(empty_database_url) == []
    assert applied_migrations(empty_database_url) == names


def test_concurrent_migrators_apply_each_migration_once(empty_database_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def migrate() -> None:
        try:
            barrier.wait()
            results.append(apply_migrations(empty_database_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    names = [m.name for m in load_migrations()]
    assert sorted(results, key=len) == [[], [], [], names]
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute("SELECT name, count(*) FROM schema_migrations GROUP BY name").fetchall()
    assert sorted(rows) == [(name, 1) for name in names]


def test_rendered_sql_runs_twice_and_fills_the_ledger(empty_database_url: str) -> None:
    script = render_sql()
    assert script.count("BEGIN;") == 1 and script.rstrip().endswith("COMMIT;")
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(script.encode())
        conn.execute(script.encode())  # idempotent: a second paste in the SQL editor is harmless
    assert apply_migrations(empty_database_url) == []
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        row = conn.execute("SELECT demand_snapshot() ->> 'queued'").fetchone()
    assert row == ("0",)


def test_schema_guarantees(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rls = dict(
            conn.execute(
                "SELECT relname, relrowsecurity FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r'", (TABLES,)
            ).fetchall()
        )
        assert rls == dict.fromkeys(TABLES, True)
        policies = conn.execute("SELECT count(*) FROM pg_policies").fetchone()
        assert policies == (0,)
        default = conn.execute(
            "SELECT column_default, is_nullable FROM information_schema.columns "
            "WHERE table_name = 'workers' AND column_name = 'last_heartbeat_at'"
        ).fetchone()
        assert default == (None, "YES")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO tasks (task_type, user_id, status) VALUES ('t', 'u', 'Done')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO workers (id, status) VALUES ('w', 'idle')")
        conn.execute("INSERT INTO workers (id) VALUES ('w')")
        row = conn.execute("SELECT status, last_heartbeat_at FROM workers WHERE id = 'w'").fetchone()
        assert row == ("spawning", None)
        settings = dict(conn.execute("SELECT key, value FROM queue_settings").fetchall())
        assert settings == {"per_user_concurrency_limit": 3, "max_task_attempts": 3}


def test_supabase_api_roles_get_nothing(pg_server_url: str, empty_database_url: str) -> None:
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for role in ("anon", "authenticated", "service_role"):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if not exists:
                conn.execute(f"CREATE ROLE {role} NOLOGIN".encode())
    apply_migrations(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        for role in ("anon", "authenticated"):
            for table in TABLES:
                row = conn.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (role, table)).fetchone()
                assert row == (False,), (role, table)
            for fn in ("claim_next_task(text,text[])", "insert_system_logs(jsonb)", "db_now()"):
                row = conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, fn)).fetchone()
                assert row == (False,), (role, fn)
        row = conn.execute(
            "SELECT has_function_privilege('service_role', 'claim_next_task(text,text[])', 'EXECUTE')"
        ).fetchone()
        assert row == (True,)
        conn.execute("SET ROLE anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT claim_next_task('w', NULL)")
