"""Shared pieces of the actor tests: fast settings, a polling wait, and cleanup of actors and pods.

Every test gets its own database (`database_url`), its own LocalProvider state dir and its own
Scaler name, so tests sharing the session's one Ray never see each other's actors or pods.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from config.settings import OrchestratorSettings

T = TypeVar("T")

NAMESPACE = "gpu-orchestrator"


def fast_settings(database_url: str, state_dir: Path, **scaling: Any) -> OrchestratorSettings:
    """Settings with short intervals (cycle and heartbeat 0.5 s) and a LocalProvider in `state_dir`.

    No warm pool unless asked (`warm_pool_size=N`): these fleets are checked for scaling back to no
    pod at all; the warm pool's own end-to-end tests (test_warm_pool.py) ask for one."""
    knobs: dict[str, Any] = {
        "min_workers": 0,
        "max_workers": 4,
        "tasks_per_worker": 1,
        "per_user_concurrency_limit": 2,
        "cycle_interval_s": 0.5,
        "heartbeat_interval_s": 0.5,
        "heartbeat_timeout_s": 4.0,
        "spawn_timeout_s": 40.0,
        "idle_timeout_s": 1.0,
        "scale_down_stabilization_s": 1.0,
        "drain_timeout_s": 30.0,
        "default_boot_time_s": 1.0,
        "breaker_cooldown_s": 300.0,
        "max_spawns_per_cycle": 4,
        "warm_pool_size": 0,
    }
    knobs.update(scaling)
    lease_ttl = knobs.pop("lease_ttl_s", 3.0)
    boot_delay = knobs.pop("local_boot_delay_s", 0.3)
    return OrchestratorSettings(
        database={"backend": "postgres", "url": database_url, "pool_min_size": 1, "pool_max_size": 3},
        provider={"kind": "local", "local_boot_delay_s": boot_delay, "name_prefix": "gpu-"},
        scaling=knobs,
        worker={"poll_interval_s": 0.2, "shutdown_grace_s": 2.0},
        log_shipping={
            "spool_dir": state_dir / "spool",
            "fallback_file": state_dir / "logs" / "fallback.jsonl",
            "dead_letter_file": state_dir / "logs" / "dead-letter.jsonl",
        },
        lease_ttl_s=lease_ttl,
        state_dir=state_dir,
    )


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def actor_pid(name: str) -> int | None:
    """The pid of the ALIVE actor `name` in our namespace, from the state API."""
    from ray.util.state import list_actors

    from orchestrator.app import state_api_address

    for actor in list_actors(
        address=state_api_address(), filters=[("name", "=", name), ("state", "=", "ALIVE")], detail=True
    ):
        if actor.ray_namespace == NAMESPACE and actor.pid:
            return int(actor.pid)
    return None


def sigkill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def kill_actor(name: str) -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)


@contextlib.contextmanager
def fleet_cleanup(settings: OrchestratorSettings, scaler_names: list[str]) -> Iterator[None]:
    """After the test: stop the Scalers, then every lifecycle of this test's workers, then every pod."""
    try:
        yield
    finally:
        for name in scaler_names:
            kill_actor(name)
        from cloud.local import LocalProvider
        from store.postgres import PostgresStore

        assert settings.database.url is not None
        with contextlib.suppress(Exception):
            store = PostgresStore(settings.database.url.get_secret_value(), min_size=1, max_size=1)
            try:
                for row in store.list_workers(include_terminated=True):
                    kill_actor(f"worker:{row.id}")
            finally:
                store.close()
        provider = LocalProvider(settings.state_dir)
        for pod in provider.list(""):
            with contextlib.suppress(Exception):
                provider.terminate(pod.id)


def explain_fleet(store: Any, decisions: int = 3) -> str:
    """Workers, their events and the last decisions, for a failure message."""
    lines = []
    for w in store.list_workers(include_terminated=True):
        lines.append(f"{w.id} {w.status.value} pod={w.pod_id} hb={w.last_heartbeat_at} tasks={w.tasks_in_progress}")
        for e in store.list_worker_events(worker_id=w.id):
            lines.append(f"    {e.at:%H:%M:%S.%f} {e.from_status}->{e.to_status}: {e.reason}")
    for d in store.list_decisions()[-decisions:]:
        lines.append(f"decision {d.id} cycle {d.cycle_number} spawn {d.spawn_count} drain {d.drain_worker_ids}")
        lines.extend(f"    {r}" for r in d.reasons)
    lines.append(f"tasks: {store.task_counts()}")
    return "\n".join(lines)
