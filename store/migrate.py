"""Applies the numbered SQL files of `store/migrations` once each, recorded in `schema_migrations`.

All pending migrations go in one transaction that first takes a transaction-level advisory lock,
so two processes migrating at once are safe: the second waits, then finds nothing pending.
`render_sql()` gives the same migrations as one script for a Supabase SQL editor or
`supabase db push`; every migration is written to be safe to run again.

A migration is known by its file name; the checksum is recorded, never compared. So files may be
reorganized as long as the new ones are idempotent: a database migrated with the old names simply
applies the new names once, harmlessly (tests/integration/test_store_migrations.py checks it for
the move from 0002_functions/0003_demand_snapshot/0900_explain to one file per domain).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import psycopg

__all__ = [
    "MIGRATIONS_LOCK_KEY",
    "Migration",
    "applied_migrations",
    "apply_migrations",
    "load_migrations",
    "render_sql",
]

# Advisory lock key of the migration runner: any constant that no other code of ours uses.
MIGRATIONS_LOCK_KEY = 0x6F72_6368_6D69_67  # "orchmig" in ASCII, fits a bigint

_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
""".strip()


@dataclass(frozen=True, slots=True)
class Migration:
    name: str  # file name without `.sql`, e.g. `0001_schema`
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: Path | Traversable | None = None) -> list[Migration]:
    """Every migration in `folder` (default: those shipped with the package), in order."""
    if folder is None:
        folder = resources.files("store").joinpath("migrations")
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [Migration(name=entry.name.removesuffix(".sql"), sql=entry.read_text()) for entry in files]


def applied_migrations(conninfo: str) -> list[str]:
    """Names recorded in the ledger (empty when it does not exist yet)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        return [row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]


def apply_migrations(
    conninfo: str, *, connect_timeout_s: float | None = None, migrations: Sequence[Migration] | None = None
) -> list[str]:
    """Apply pending migrations (default: the package's) in one transaction; returns the names
    applied (empty when none).

    Raises psycopg.OperationalError when the database cannot be reached (callers that talk to a
    person turn it into a one-line message; see store.errors).
    """
    timeout = max(1, round(connect_timeout_s)) if connect_timeout_s is not None else None
    applied: list[str] = []
    with psycopg.connect(conninfo, connect_timeout=timeout) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK_KEY,))
        conn.execute(_LEDGER_DDL)
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for migration in load_migrations() if migrations is None else migrations:
            if migration.name in done:
                continue
            conn.execute(migration.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                (migration.name, migration.checksum),
            )
            applied.append(migration.name)
    return applied


def render_sql() -> str:
    """All migrations as one script that records itself in the ledger; safe to run again."""
    parts = [
        "-- gpu-orchestrator schema: paste into the Supabase SQL editor, or save as",
        "-- supabase/migrations/<timestamp>_gpu_orchestrator.sql and run `supabase db push`.",
        "-- Safe to run again: every statement is idempotent.",
        "BEGIN;",
        f"SELECT pg_advisory_xact_lock({MIGRATIONS_LOCK_KEY});",
        _LEDGER_DDL + ";",
    ]
    for migration in load_migrations():
        parts.append(f"\n-- ===== {migration.name} =====")
        parts.append(migration.sql.rstrip())
        parts.append(
            "INSERT INTO schema_migrations (name, checksum) "
            f"VALUES ('{migration.name}', '{migration.checksum}') ON CONFLICT (name) DO NOTHING;"
        )
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"
