"""Shared set-up of the actor benchmarks: a throwaway Postgres, a local Ray, the loopback RunPod API."""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from config.settings import OrchestratorSettings


@contextlib.contextmanager
def postgres(max_connections: int | None = None) -> Iterator[str]:
    """A migrated throwaway pgserver database.

    pgserver's default max_connections is 100; `max_connections` raises it (ALTER SYSTEM and a
    restart: the server is ours and thrown away) so one pool per actor fits for 100+ actors.
    """
    import pgserver
    import psycopg

    from store.migrate import apply_migrations

    pgdata = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    if max_connections is not None:
        _set_max_connections(server, pgdata, max_connections)
    url = server.get_uri()
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:  # the bench's raw SQL names our tables unqualified
        conn.execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = orchestrator, public', "
            "current_database()); END $$"
        )
    try:
        yield url
    finally:
        server.cleanup()


def _set_max_connections(server: Any, pgdata: Path, max_connections: int) -> None:
    import psycopg
    from pgserver import postgres_server

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET max_connections = {int(max_connections)}")
    # pg_ctl restart reuses the options of the last start (postmaster.opts): same socket directory.
    postgres_server.pg_ctl(  # type: ignore[attr-defined]
        ["-w", "-m", "fast", "restart"], pgdata=pgdata, user=server.system_user, timeout=30
    )
    # The handle remembers the old postmaster; point it at the new one so cleanup() stops it.
    server._postmaster_info = postgres_server.PostmasterInfo.read_from_pgdata(pgdata)  # type: ignore[attr-defined]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None and int(row[0]) == max_connections, row


def settings_for(
    url: str,
    state_dir: Path,
    api_base_url: str | None,
    *,
    pool_max_size: int = 1,
    connect_timeout_s: float = 5.0,
    **scaling: Any,
) -> OrchestratorSettings:
    provider: dict[str, Any] = {"kind": "local", "local_boot_delay_s": 0.0}
    if api_base_url is not None:
        provider = {"kind": "runpod", "runpod_api_key": "bench-key", "runpod_api_base_url": api_base_url}
    knobs = {"max_workers": 200, "heartbeat_timeout_s": 600.0, "spawn_timeout_s": 3600.0, **scaling}
    return OrchestratorSettings(
        database={
            "backend": "postgres",
            "url": url,
            "pool_min_size": 1,
            "pool_max_size": pool_max_size,
            "connect_timeout_s": connect_timeout_s,
        },
        provider=provider,
        scaling=knobs,
        lease_ttl_s=max(30.0, 3 * knobs.get("cycle_interval_s", 10.0)),
        state_dir=state_dir,
    )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float], unit: str = "s", scale: float = 1.0) -> str:
    if not values:
        return "no samples"
    v = [x * scale for x in values]
    return (
        f"n={len(v)} p50={pct(v, 50):.3f}{unit} p95={pct(v, 95):.3f}{unit} "
        f"mean={statistics.fmean(v):.3f}{unit} max={max(v):.3f}{unit}"
    )
