"""Chooses and opens the store the settings select: direct Postgres, Supabase REST, or embedded.

`database.backend` says which, never guessed: `postgres` (database.url, DATABASE_URL), `supabase`
(database.supabase_url with the service-role key: SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY) or
`embedded` (the pgserver in `database.embedded_dir`).
The embedded database is migrated on open (it is ours alone); others are migrated by
`orchestrator migrate` unless asked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from config.settings import DatabaseBackend, DatabaseSettings, OrchestratorSettings, QueueProfile
from store.base import Store, StoreError

__all__ = ["conninfo_for", "one_shot_store", "open_store", "open_store_from_env"]


def conninfo_for(database: DatabaseSettings) -> str | None:
    """The Postgres conninfo the settings point at (starting the embedded server if it is the one),
    or None for Supabase REST, which has no conninfo."""
    backend = database.backend
    if backend is DatabaseBackend.POSTGRES:
        if database.url is None:  # the settings refuse this; a hand-made copy could still do it
            raise StoreError("database.backend is postgres but database.url is not set (DATABASE_URL)")
        return database.url.get_secret_value()
    if backend is DatabaseBackend.SUPABASE:
        return None
    from store.embedded import ensure_embedded

    return ensure_embedded(Path(database.embedded_dir))


def open_store(
    settings: OrchestratorSettings,
    *,
    migrate: bool | None = None,
    pool_max_size: int | None = None,
    require_reachable: bool = True,
) -> Store:
    """Open the store the settings select. `migrate` None means: migrate only the embedded database.

    `pool_max_size` caps the Postgres pool below `database.pool_max_size` (and `pool_min_size` with
    it) for a process that does one thing at a time, e.g. a WorkerLifecycle: 100 of them must not
    hold 800 connections.

    Raises DatabaseUnavailable (a one-line, secret-free message) when it cannot be reached, unless
    `require_reachable` is False (an actor's store: it opens during an outage, and its calls raise
    DatabaseUnavailable until the database answers; the embedded server is still started here).
    """
    database = settings.database
    backend = database.backend
    if backend is DatabaseBackend.SUPABASE:
        from store.supabase import SupabaseStore

        if database.supabase_service_role_key is None or not database.supabase_url:
            raise StoreError(
                "database.backend is supabase but database.supabase_url or database.supabase_service_role_key "
                "is not set (SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY)"
            )
        return SupabaseStore(
            str(database.supabase_url),
            database.supabase_service_role_key.get_secret_value(),
            retries=database.request_retries,
            timeout_s=max(database.connect_timeout_s, 10.0),
        )
    conninfo = conninfo_for(database)
    assert conninfo is not None
    if migrate if migrate is not None else backend is DatabaseBackend.EMBEDDED:
        _migrate(conninfo, database.connect_timeout_s, settings.queue.profile.value)
    from store.postgres import PostgresStore

    max_size = database.pool_max_size if pool_max_size is None else min(database.pool_max_size, pool_max_size)
    return PostgresStore(
        conninfo,
        min_size=min(database.pool_min_size, max_size),
        max_size=max_size,
        connect_timeout_s=database.connect_timeout_s,
        retries=database.request_retries,
        change_probe_s=_change_probe_s(settings),
        require_reachable=require_reachable,
    )


def _change_probe_s(settings: OrchestratorSettings) -> float | None:
    """The reigh profile has no NOTIFY (nothing of ours on the app's tables): poll for new tasks."""
    if settings.queue.profile is QueueProfile.REIGH and settings.queue.new_task_probe_s > 0:
        return settings.queue.new_task_probe_s
    return None


@contextmanager
def one_shot_store(settings: OrchestratorSettings, *, migrate: bool | None = None) -> Iterator[Store]:
    """A store for a command that runs and exits (status, explain, migrate).

    An embedded server that this call had to start is stopped again on exit, so a one-shot command
    leaves the machine as it found it; one that was already running (the demo, `orchestrator up`)
    is left alone.
    """
    database = settings.database
    pgdata = Path(database.embedded_dir).expanduser()
    started_here = database.backend is DatabaseBackend.EMBEDDED and not (pgdata / "postmaster.pid").exists()
    try:
        store = open_store(settings, migrate=migrate)
    except BaseException:
        if started_here:
            _stop_embedded(pgdata)
        raise
    try:
        yield store
    finally:
        store.close()
        if started_here:
            _stop_embedded(pgdata)


def _stop_embedded(pgdata: Path) -> None:
    from store.embedded import stop_embedded

    stop_embedded(pgdata)


def _migrate(conninfo: str, connect_timeout_s: float, profile: str) -> None:
    import psycopg

    from store.errors import unavailable
    from store.migrate import apply_migrations

    try:
        apply_migrations(conninfo, profile=profile, connect_timeout_s=connect_timeout_s)
    except psycopg.OperationalError as exc:
        raise unavailable(conninfo, "applying migrations", exc) from None


def open_store_from_env(environ: Mapping[str, str]) -> Store:
    """The store of a worker process inside a pod: DATABASE_URL, or SUPABASE_URL + SUPABASE_WORKER_TOKEN
    (its own JWT; SUPABASE_ANON_KEY is sent as `apikey`), or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY.

    Raises StoreError when neither is set (a pod never starts an embedded database of its own).
    """
    url = environ.get("DATABASE_URL")
    if url:
        from store.postgres import PostgresStore

        return PostgresStore(url, min_size=1, max_size=2)
    supabase_url = environ.get("SUPABASE_URL")
    token = environ.get("SUPABASE_WORKER_TOKEN")  # the worker's own JWT (cloud/spec.py)
    if supabase_url and token:
        from store.supabase import SupabaseStore

        return SupabaseStore.with_worker_token(supabase_url, token, apikey=environ.get("SUPABASE_ANON_KEY") or None)
    key = environ.get("SUPABASE_SERVICE_ROLE_KEY")
    if supabase_url and key:
        from store.supabase import SupabaseStore

        return SupabaseStore(supabase_url, key)
    raise StoreError("no database configured: set DATABASE_URL, or SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY")
