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
def postgres() -> Iterator[str]:
    """A migrated throwaway pgserver database (default max_connections 100: one per actor)."""
    import pgserver

    from store.migrate import apply_migrations

    pgdata = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    url = server.get_uri()
    apply_migrations(url)
    try:
        yield url
    finally:
        server.cleanup()


def settings_for(url: str, state_dir: Path, api_base_url: str | None, **scaling: Any) -> OrchestratorSettings:
    provider: dict[str, Any] = {"kind": "local", "local_boot_delay_s": 0.0}
    if api_base_url is not None:
        provider = {"kind": "runpod", "runpod_api_key": "bench-key", "runpod_api_base_url": api_base_url}
    knobs = {"max_workers": 200, "heartbeat_timeout_s": 600.0, "spawn_timeout_s": 3600.0, **scaling}
    return OrchestratorSettings(
        database={"url": url, "pool_min_size": 1, "pool_max_size": 1},
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
