"""Applies the numbered SQL files of `store/migrations` once each, recorded in `schema_migrations`.

Everything the orchestrator owns lives in the schema `orchestrator` (SCHEMA), so it never collides
with an app's tables: the core files of `store/migrations/` (worker rows, events, decisions, logs,
leases, settings) plus the files of one queue profile's folder (`native/`: our own `tasks` table
and the worker's functions; `reigh/`: functions over an existing Reigh app's tables in `public`,
which it reads and writes but never creates, alters or drops). Files run in the order of their
numbers across both folders; a profile's `NNNN_` sits between the core files it depends on.

All pending migrations go in one transaction that first takes a transaction-level advisory lock,
so two processes migrating at once are safe: the second waits, then finds nothing pending.
`render_sql()` gives the same migrations as one script for a Supabase SQL editor or
`supabase db push`; every migration is written to be safe to run again.

Every function of the schema runs with a pinned search_path (the schema's own, unless its file set
another), so callers need no search_path of their own and an app's table of the same name is never
taken for ours. A database migrated before the namespace (our tables in `public`, recorded in
`public.schema_migrations`) has them moved into the schema with their data, once.

A migration is known by its file name, and its checksum is recorded and compared: a file that was
applied to this database and has changed since is an error naming the file (MigrationChanged),
never silently skipped. A change goes in a new file. Files may still be reorganized under new names
as long as the new ones are idempotent: a database migrated with the old names simply applies the
new names once, harmlessly (tests/integration/test_store_migrations.py checks it for the move from
0002_functions/0003_demand_snapshot/0900_explain to one file per domain).

A file whose first line is OUTSIDE_TRANSACTION (`-- migrate: outside-transaction`) holds only
`CREATE INDEX CONCURRENTLY` / `DROP INDEX CONCURRENTLY` statements: the pending files before it are
committed first, then each of its statements runs on its own (a concurrent build cannot run in a
transaction, and never blocks the table's writers: claims go on while an index of a large `tasks`
is built), an invalid index left by an interrupted build is dropped and built again, and the files
after it go in a transaction of their own. So a run is one transaction per stretch of ordinary
files; the runner holds a session-level advisory lock for the whole run (taken by polling, so a
waiting migrator holds no snapshot a concurrent build would wait for). `render_sql()` (one script
for an SQL editor, which runs it as one transaction) emits those statements without CONCURRENTLY.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import psycopg

__all__ = [
    "MIGRATIONS_LOCK_KEY",
    "OUTSIDE_TRANSACTION",
    "PROFILES",
    "SCHEMA",
    "Migration",
    "MigrationChanged",
    "MigrationFileError",
    "ProfileMismatch",
    "applied_migrations",
    "apply_migrations",
    "load_migrations",
    "render_sql",
]

SCHEMA = "orchestrator"  # the orchestrator's own namespace in the database
PROFILES = ("native", "reigh")  # queue profiles: a folder of store/migrations each

# Advisory lock key of the migration runner: any constant that no other code of ours uses.
MIGRATIONS_LOCK_KEY = 0x6F72_6368_6D69_67  # "orchmig" in ASCII, fits a bigint

_PREAMBLE = f"CREATE SCHEMA IF NOT EXISTS {SCHEMA};\nSET LOCAL search_path = {SCHEMA};"

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
""".strip()

# Our tables of the layout before the namespace, each with a column only ours has: a table of the
# same name that lacks it (an app's `tasks`, `workers`, `system_logs`) is never moved.
_LEGACY_TABLES = {
    "tasks": "depends_on",
    "workers": "pod_id",
    "worker_events": "to_status",
    "scaling_decisions": "spawn_count",
    "system_logs": "inserted_at",
    "orchestrator_leases": "epoch",
    "queue_settings": "value",
}
# Functions of that layout that no current file defines any more.
_LEGACY_FUNCTIONS = ("queue_settings_json", "count_system_logs", "renew_leader_lease", "notify_task_change")

# Pins every function of the schema to it (a function whose file set its own search_path keeps it).
_PIN_SEARCH_PATH = f"""
DO $pin$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = '{SCHEMA}'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = {SCHEMA}, pg_temp', f);
    END LOOP;
END
$pin$;
""".strip()


class ProfileMismatch(Exception):
    """The database was migrated for another queue profile."""


class MigrationChanged(Exception):
    """A migration applied to the database has changed since (its checksum differs)."""


class MigrationFileError(ValueError):
    """A migration file breaks a rule of the runner (what an outside-transaction file may hold)."""


# First line of a file whose statements run one by one outside any transaction (see the docstring).
OUTSIDE_TRANSACTION = "-- migrate: outside-transaction"
_INDEX_STATEMENT = re.compile(r"^(CREATE\s+(UNIQUE\s+)?INDEX|DROP\s+INDEX)\s+CONCURRENTLY\s", re.IGNORECASE)
_INDEX_NAME = re.compile(r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.IGNORECASE)
# How long a migrator waits between tries of the runner's lock.
_LOCK_POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Migration:
    name: str  # file name without `.sql`, with its profile folder: `0001_schema`, `native/0020_tasks`
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def profile(self) -> str | None:
        """The queue profile the file belongs to; None for a core file."""
        return self.name.split("/", 1)[0] if "/" in self.name else None

    @property
    def path(self) -> str:
        """The file, as named in errors: `store/migrations/native/0020_tasks.sql`."""
        return f"store/migrations/{self.name}.sql"

    @property
    def outside_transaction(self) -> bool:
        """Its statements run one by one, outside any transaction (CREATE INDEX CONCURRENTLY)."""
        return self.sql.lstrip().startswith(OUTSIDE_TRANSACTION)

    def statements(self) -> list[str]:
        """The statements of an outside-transaction file; MigrationFileError for anything but
        CREATE/DROP INDEX CONCURRENTLY (those are the only statements it may hold)."""
        code = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        found = [" ".join(part.split()) for part in code.split(";") if part.strip()]
        for statement in found:
            if not _INDEX_STATEMENT.match(statement):
                raise MigrationFileError(
                    f"{self.path}: an outside-transaction migration may hold only CREATE/DROP INDEX "
                    f"CONCURRENTLY statements, not {statement[:60]!r}"
                )
        return found


def _order(migration: Migration) -> tuple[str, str]:
    """Files run by number across the core folder and the profile's."""
    return (migration.name.rsplit("/", 1)[-1], migration.name)


def load_migrations(profile: str = "native", folder: Path | Traversable | None = None) -> list[Migration]:
    """The core migrations in `folder` (default: those shipped with the package) and those of
    `profile`'s subfolder, in the order of their numbers."""
    if profile not in PROFILES:
        raise ValueError(f"queue profile {profile!r} is not one of {', '.join(PROFILES)}")
    if folder is None:
        folder = resources.files("store").joinpath("migrations")
    found = [
        Migration(name=entry.name.removesuffix(".sql"), sql=entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    subfolder = folder.joinpath(profile)
    if subfolder.is_dir():
        found += [
            Migration(name=f"{profile}/{entry.name.removesuffix('.sql')}", sql=entry.read_text())
            for entry in subfolder.iterdir()
            if entry.name.endswith(".sql")
        ]
    return sorted(found, key=_order)


def _defined_functions() -> list[str]:
    """Names of every function any shipped file defines (both profiles), plus retired ones."""
    names = set(_LEGACY_FUNCTIONS)
    for profile in PROFILES:
        for migration in load_migrations(profile):
            names.update(re.findall(r"CREATE OR REPLACE FUNCTION\s+(\w+)\s*\(", migration.sql))
    return sorted(names)


def _relocation_sql() -> str:
    """Moves our tables of the pre-namespace layout from `public` into the schema, once."""
    tables = ", ".join(f"('{t}', '{c}')" for t, c in _LEGACY_TABLES.items())
    functions = ", ".join(f"'{f}'" for f in _defined_functions())
    return f"""
DO $relocate$
DECLARE
    t record;
    f regprocedure;
BEGIN
    IF to_regclass('public.schema_migrations') IS NULL OR to_regclass('{SCHEMA}.schema_migrations') IS NOT NULL THEN
        RETURN;
    END IF;
    -- a separate statement: the table may not exist, and plpgsql plans an IF's whole condition
    IF NOT EXISTS (SELECT 1 FROM public.schema_migrations WHERE name = '0001_schema') THEN
        RETURN;
    END IF;
    FOR t IN SELECT * FROM (VALUES {tables}) AS v (tab, col) LOOP
        IF EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = 'public' AND table_name = t.tab AND column_name = t.col) THEN
            EXECUTE format('ALTER TABLE public.%I SET SCHEMA {SCHEMA}', t.tab);
        END IF;
    END LOOP;
    IF to_regclass('public.orchestrator_lease_epoch_seq') IS NOT NULL THEN
        ALTER SEQUENCE public.orchestrator_lease_epoch_seq SET SCHEMA {SCHEMA};
    END IF;
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'public'::regnamespace AND p.proname IN ({functions}) LOOP
        EXECUTE format('DROP FUNCTION %s CASCADE', f);
    END LOOP;
    DROP TABLE public.schema_migrations;
END
$relocate$;
""".strip()


def applied_migrations(conninfo: str) -> list[str]:
    """Names recorded in the ledger (empty when it does not exist yet)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute(f"SELECT to_regclass('{SCHEMA}.schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        names = [row[0] for row in conn.execute(f"SELECT name FROM {SCHEMA}.schema_migrations")]
    return sorted(names, key=lambda name: (name.rsplit("/", 1)[-1], name))


def _check_profile(done: set[str], profile: str) -> None:
    others = sorted({name.split("/", 1)[0] for name in done if "/" in name} - {profile})
    if others:
        raise ProfileMismatch(
            f"this database was migrated for the queue profile {others[0]!r}, not {profile!r}: "
            f"set queue.profile: {others[0]} (ORCHESTRATOR_QUEUE__PROFILE={others[0]}), or use another database"
        )


def _check_unchanged(recorded: dict[str, str], pending: Sequence[Migration]) -> None:
    """MigrationChanged naming the first file applied here whose content has changed since."""
    for migration in pending:
        checksum = recorded.get(migration.name)
        if checksum is not None and checksum != migration.checksum:
            raise MigrationChanged(
                f"{migration.path} was applied to this database (checksum {checksum[:12]}) and has "
                f"changed since (now {migration.checksum[:12]}): an applied migration must never change. "
                "Put the change in a new migration file, or restore the file as it was applied"
            )


def _take_lock(conn: psycopg.Connection[Any]) -> None:
    """The runner's session-level lock, by polling: a migrator that waits holds no snapshot, so a
    concurrent index build of the migrator holding it never waits for it."""
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATIONS_LOCK_KEY,)).fetchone()
        if row is not None and row[0]:
            return
        time.sleep(_LOCK_POLL_S)


def _run_outside_transaction(conn: psycopg.Connection[Any], migration: Migration) -> None:
    """Each statement on its own (autocommit); an invalid index left by an interrupted concurrent
    build is dropped first, so IF NOT EXISTS does not take it for a built one."""
    conn.execute(f"SET search_path = {SCHEMA}")
    for statement in migration.statements():
        name = _INDEX_NAME.match(statement)
        if name is not None:
            invalid = conn.execute(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %s AND c.relnamespace = %s::regnamespace AND NOT i.indisvalid",
                (name.group(1), SCHEMA),
            ).fetchone()
            if invalid:
                conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS {SCHEMA}."{name.group(1)}"'.encode())
        conn.execute(statement.encode())
    conn.execute("INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)", (migration.name, migration.checksum))
    conn.execute("RESET search_path")


def apply_migrations(
    conninfo: str,
    *,
    profile: str = "native",
    connect_timeout_s: float | None = None,
    migrations: Sequence[Migration] | None = None,
) -> list[str]:
    """Apply pending migrations (default: the package's, for `profile`); returns the names applied
    (empty when none). One transaction per stretch of ordinary files, outside-transaction files
    between them (see the module docstring): a failure leaves the stretches before it applied.

    Raises psycopg.OperationalError when the database cannot be reached (callers that talk to a
    person turn it into a one-line message; see store.errors), ProfileMismatch when the database
    belongs to the other queue profile, MigrationChanged when an applied file has changed.
    """
    timeout = max(1, round(connect_timeout_s)) if connect_timeout_s is not None else None
    applied: list[str] = []
    pending = load_migrations(profile) if migrations is None else list(migrations)
    with psycopg.connect(conninfo, connect_timeout=timeout, autocommit=True) as conn:
        _take_lock(conn)
        try:
            with conn.transaction():
                conn.execute(_PREAMBLE)
                conn.execute(_relocation_sql().encode())
                conn.execute(_LEDGER_DDL)
                recorded: dict[str, str] = dict(conn.execute("SELECT name, checksum FROM schema_migrations").fetchall())
            _check_profile(set(recorded), profile)
            _check_unchanged(recorded, pending)
            todo = [m for m in pending if m.name not in recorded]
            while todo:
                stretch: list[Migration] = []
                while todo and not todo[0].outside_transaction:
                    stretch.append(todo.pop(0))
                if stretch:
                    with conn.transaction():
                        conn.execute(_PREAMBLE)
                        for migration in stretch:
                            conn.execute(migration.sql.encode())
                            conn.execute(
                                "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                                (migration.name, migration.checksum),
                            )
                        conn.execute(_PIN_SEARCH_PATH.encode())
                    applied += [m.name for m in stretch]
                if todo:
                    outside = todo.pop(0)
                    _run_outside_transaction(conn, outside)
                    applied.append(outside.name)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATIONS_LOCK_KEY,))
    return applied


def render_sql(profile: str = "native") -> str:
    """All migrations of `profile` as one script that records itself in the ledger; safe to run again."""
    parts = [
        f"-- gpu-orchestrator schema (queue profile {profile}): paste into the Supabase SQL editor, or save as",
        "-- supabase/migrations/<timestamp>_gpu_orchestrator.sql and run `supabase db push`.",
        f"-- Safe to run again: every statement is idempotent. Everything it creates is in the schema {SCHEMA}.",
        "BEGIN;",
        f"SELECT pg_advisory_xact_lock({MIGRATIONS_LOCK_KEY});",
        _PREAMBLE,
        _relocation_sql(),
        _LEDGER_DDL + ";",
    ]
    for migration in load_migrations(profile):
        parts.append(f"\n-- ===== {migration.name} =====")
        if migration.outside_transaction:
            # The script runs as one transaction, where CONCURRENTLY cannot: a plain build (on a
            # large live table, run these statements one by one with CONCURRENTLY instead).
            parts += [
                re.sub(r"\s+CONCURRENTLY\s+", " ", s, count=1, flags=re.IGNORECASE) + ";"
                for s in migration.statements()
            ]
        else:
            parts.append(migration.sql.rstrip())
        # The script has just run the file as it is now: the ledger records that version.
        parts.append(
            "INSERT INTO schema_migrations (name, checksum) "
            f"VALUES ('{migration.name}', '{migration.checksum}') "
            "ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum;"
        )
    parts.append(_PIN_SEARCH_PATH)
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"
