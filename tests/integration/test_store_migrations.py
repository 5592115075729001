"""Migrations: applied once, safe twice and from several processes at once, safe over the earlier
file layout; the schema's guarantees."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fleet.models import WorkerState
from store.base import NewTask
from store.migrate import (
    OUTSIDE_TRANSACTION,
    Migration,
    MigrationChanged,
    MigrationFileError,
    applied_migrations,
    apply_migrations,
    load_migrations,
    render_sql,
)
from store.postgres import PostgresStore
from tests.support.polling import wait_for

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


# The functions' files before they were split by domain, and the last commit that has them.
EARLIER_LAYOUT = ("0001_schema", "0002_functions", "0003_demand_snapshot", "0900_explain")
EARLIER_LAYOUT_COMMIT = "dc48ae2c821d9f5344b87ffec5fdc1c02221716e"


def _empty_database(pg_server_url: str) -> str:
    name = f"e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0'.encode())
        conn.execute(f'ALTER DATABASE "{name}" SET search_path = orchestrator, public'.encode())
    return psycopg.conninfo.make_conninfo(pg_server_url, dbname=name)


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    yield _empty_database(pg_server_url)


# Files of the package, in the order they run (files added later may come between them).
EXPECTED_FILES = [
    "0001_schema",
    "native/0002_tasks_table",
    "0010_leases",
    "0015_settings",
    "native/0020_tasks",
    "native/0025_workers_queue",
    "0030_workers",
    "0040_decisions",
    "0050_logs",
    "0070_retention",
    "0075_indexes",
    "native/0076_queue_indexes",
    "0090_grants",
]


def test_apply_once_then_nothing(empty_database_url: str) -> None:
    names = [m.name for m in load_migrations()]
    # files run by number across the core folder and the profile's
    assert names == sorted(names, key=lambda name: name.rsplit("/", 1)[-1])
    assert [name for name in names if name in EXPECTED_FILES] == EXPECTED_FILES
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
    assert sorted(rows) == sorted((name, 1) for name in names)


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


def _earlier_layout(folder: Path) -> list[Migration]:
    """The earlier migration files, from git history, written to `folder` and loaded from there."""
    root = Path(__file__).resolve().parents[2]
    for name in EARLIER_LAYOUT:
        try:
            shown = subprocess.run(
                ["git", "-C", str(root), "show", f"{EARLIER_LAYOUT_COMMIT}:store/migrations/{name}.sql"],
                check=True,
                capture_output=True,
                text=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"needs the git history of this repository ({exc})")
        (folder / f"{name}.sql").write_text(shown.stdout)
    return load_migrations(folder=folder)


def _schema_objects(conninfo: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every function (signature, definition, privileges), index and trigger of the schema."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return {
            "functions": conn.execute(
                "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text FROM pg_proc p "
                "WHERE p.pronamespace = current_schema()::regnamespace ORDER BY 1"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1"
            ).fetchall(),
            "triggers": conn.execute(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1"
            ).fetchall(),
        }


def _apply_as_before_the_namespace(conninfo: str, migrations: list[Migration]) -> None:
    """What the runner did before the `orchestrator` schema: everything in `public`."""
    with psycopg.connect(conninfo) as conn, conn.transaction():
        conn.execute("SET LOCAL search_path = public")
        conn.execute(
            "CREATE TABLE schema_migrations (name text PRIMARY KEY, checksum text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in migrations:
            conn.execute(migration.sql.encode())
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (migration.name, migration.checksum))


def test_a_database_of_the_earlier_layout_takes_the_new_files(
    pg_server_url: str, empty_database_url: str, tmp_path: Path
) -> None:
    earlier = _earlier_layout(tmp_path)
    assert [m.name for m in earlier] == list(EARLIER_LAYOUT)
    _apply_as_before_the_namespace(empty_database_url, earlier)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (id, task_type, user_id) VALUES ('kept', 't', 'u')")
        dead = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname IN ('queue_settings_json', 'count_system_logs', "
            "'renew_leader_lease')"
        ).fetchone()
    assert dead == (3,)  # the earlier layout had them

    names = [m.name for m in load_migrations()]
    # our tables move into the schema `orchestrator` with their rows; every file applies there once
    assert apply_migrations(empty_database_url) == names
    assert apply_migrations(empty_database_url) == []
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        left_in_public = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        ).fetchone()
        functions_in_public = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        ).fetchone()
    assert left_in_public == (0,) and functions_in_public == (0,)
    fresh = _empty_database(pg_server_url)
    apply_migrations(fresh)
    upgraded, new = _schema_objects(empty_database_url), _schema_objects(fresh)
    assert upgraded == new
    assert not any(
        sig.startswith(("queue_settings_json", "count_system_logs", "renew_")) for sig, *_ in new["functions"]
    )
    store = PostgresStore(empty_database_url, min_size=1, max_size=1)
    try:
        assert store.demand_snapshot().queued == 1 and store.get_task("kept") is not None
    finally:
        store.close()


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
        # 0090_grants.sql names every function of the domain files: none is left callable by anon.
        functions = [
            row[0]
            for row in conn.execute(
                "SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace"
            )
        ]
        assert "explain_silences(timestamp with time zone,timestamp with time zone,double precision)" in functions
        for fn in functions:
            row = conn.execute(
                "SELECT has_function_privilege('anon', %s, 'EXECUTE'), "
                "has_function_privilege('service_role', %s, 'EXECUTE')",
                (fn, fn),
            ).fetchone()
            assert row == (False, True), fn
        conn.execute("SET ROLE anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT orchestrator.claim_next_task('w', NULL)")


def test_a_changed_applied_migration_is_refused_naming_its_file(empty_database_url: str) -> None:
    migrations = load_migrations()
    assert apply_migrations(empty_database_url, migrations=migrations) == [m.name for m in migrations]
    changed = [
        Migration(m.name, m.sql + "\n-- edited after it was applied\n") if m.name == "native/0020_tasks" else m
        for m in migrations
    ]
    with pytest.raises(MigrationChanged, match=r"store/migrations/native/0020_tasks\.sql was applied"):
        apply_migrations(empty_database_url, migrations=changed)
    # a new file next to the unchanged ones is applied as before
    added = [*migrations, Migration("0095_added", "CREATE TABLE IF NOT EXISTS added_later (id int);")]
    assert apply_migrations(empty_database_url, migrations=added) == ["0095_added"]


def test_an_outside_transaction_file_builds_indexes_concurrently_and_holds_nothing_else(
    database_url: str,
) -> None:
    index = Migration(
        "0096_index",
        f"{OUTSIDE_TRANSACTION}\nCREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_bench_idx ON tasks (task_type);\n",
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        # an interrupted concurrent build leaves an invalid index of that name: dropped and built again
        conn.execute("CREATE INDEX tasks_bench_idx ON tasks (task_type)")
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'tasks_bench_idx'::regclass")
    assert apply_migrations(database_url, migrations=[index]) == ["0096_index"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        valid = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'tasks_bench_idx'::regclass"
        ).fetchone()
    assert valid == (True,)
    bad = Migration("0097_bad", f"{OUTSIDE_TRANSACTION}\nCREATE TABLE nope (id int);\n")
    with pytest.raises(MigrationFileError, match=r"store/migrations/0097_bad\.sql: .*only CREATE/DROP INDEX"):
        apply_migrations(database_url, migrations=[bad])


def test_claims_go_on_while_an_outside_transaction_index_is_built(database_url: str) -> None:
    """A concurrent build waits for the transactions that were open when it began (here, one held
    open on purpose), and meanwhile holds no lock that stops a claim; a plain CREATE INDEX inside a
    migration's transaction would (SHARE on tasks conflicts with the claim's UPDATE)."""
    store = PostgresStore(database_url, max_size=2)
    store.insert_tasks([NewTask(task_type="t", user_id=f"u{i}") for i in range(5)])
    store.create_worker("w", reason="t")
    store.transition_worker("w", WorkerState.SPAWNING, WorkerState.ACTIVE, "t")
    index = Migration(
        "0098_index",
        f"{OUTSIDE_TRANSACTION}\nCREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_params_idx ON tasks (id, task_type);\n",
    )
    applied: list[list[str]] = []
    with psycopg.connect(database_url) as old_reader:
        # an open transaction with a snapshot (REPEATABLE READ keeps it) that the build must wait for
        old_reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        old_reader.execute("SELECT count(*) FROM tasks").fetchone()
        thread = threading.Thread(target=lambda: applied.append(apply_migrations(database_url, migrations=[index])))
        thread.start()
        with psycopg.connect(database_url, autocommit=True) as conn:
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE INDEX CONCURRENTLY%%' "
                        "AND wait_event_type = 'Lock'"
                    ).fetchone()
                    == (1,)
                ),
                20,
                "the build waiting for the open transaction",
            )
            conn.execute("SET lock_timeout = '2s'")
            for _ in range(3):  # would fail with LockNotAvailable if the build blocked claims
                claimed = conn.execute("SELECT claim_next_task('w')").fetchone()
                assert claimed is not None and claimed[0] is not None
        assert not applied  # still building
        old_reader.rollback()
    thread.join(timeout=30)
    assert applied == [["0098_index"]]
    store.close()
