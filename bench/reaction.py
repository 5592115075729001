"""Time from a task's insert to the Scaler's reaction, with Postgres notifications and with polling only.

Prints p50/p95 of insert -> spawn decision recorded and insert -> the provider's create (deploy)
call. The Scaler makes that call right after writing the worker row (actors/scaler.py
`_Provisioner`), before the WorkerLifecycle actor starts; before that change the lifecycle made
it once its Ray worker process had started, p50 ~2.9 s. Target: p50 under 0.5 s with
notifications (the replaced system polled every 30 s).

Pods are loopback RunPod pods (tests/support/runpod_api.py) through the real SDK; the bench
records the moment each deploy request arrives. Each sample inserts one task at a random moment of
the Scaler's cycle; each task asks for one more worker (max_workers is large), so no clean-up runs
between samples.

    .venv/bin/python bench/reaction.py [--samples 15] [--cycle-interval 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from bench._fleet_bench import postgres, settings_for, summary


class _PollingOnly:
    """The Postgres store with notifications switched off (what the Supabase REST store does)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def wait_for_task_change(self, timeout_s: float) -> bool:
        time.sleep(timeout_s)
        return False


@contextlib.contextmanager
def _reigh_database(url: str) -> Iterator[str]:
    """A second database on the same server: a Reigh-shaped app, migrated in the reigh profile."""
    import psycopg

    from store.migrate import apply_migrations
    from store.reigh.fixture import apply_app_fixture

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench_reigh")
    reigh_url = psycopg.conninfo.make_conninfo(url, dbname="bench_reigh")
    apply_app_fixture(reigh_url)
    apply_migrations(reigh_url, profile="reigh")
    yield reigh_url


class _ReighApp:
    """Inserts a task the way the Reigh app does: a new user (with credits) and project per sample,
    so the app's per-user limit of 5 never hides a sample's demand."""

    def __init__(self, url: str) -> None:
        import psycopg

        from store.reigh import fixture

        self._conn = psycopg.connect(url, autocommit=True)
        self._fixture = fixture
        fixture.add_task_type(self._conn, "travel_segment", "gpu")

    def insert(self) -> None:
        project = self._fixture.add_project(self._conn, self._fixture.add_user(self._conn, credits=10, in_cloud=True))
        self._fixture.add_task(self._conn, project_id=project, task_type="travel_segment", params={})


def run(mode: str, samples: int, cycle_interval_s: float) -> None:
    from tests.support.runpod_api import FakeRunPodApi

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres())
        api = stack.enter_context(FakeRunPodApi(api_key="bench-key", boot_delay_s=3600))
        if mode.startswith("reigh"):
            url = stack.enter_context(_reigh_database(url))
        _run(mode, samples, cycle_interval_s, url, api)


def _run(mode: str, samples: int, cycle_interval_s: float, url: str, api: Any) -> None:
    import ray

    from actors import remote
    from actors.scaler import Scaler
    from store.base import NewTask
    from store.postgres import PostgresStore

    deploys: list[float] = []
    original = api._deploy

    def timed_deploy(query: str) -> Any:
        deploys.append(time.time())
        return original(query)

    api._deploy = timed_deploy  # type: ignore[method-assign]
    settings = settings_for(url, Path(tempfile.mkdtemp()), api.base_url, cycle_interval_s=cycle_interval_s)
    if mode.startswith("reigh"):
        settings = settings.model_copy(update={"queue": settings.queue.model_copy(update={"profile": "reigh"})})
    app = _ReighApp(url) if mode.startswith("reigh") else None

    def store_factory(s: Any) -> Any:
        if mode.startswith("reigh"):
            probe = settings.queue.new_task_probe_s if mode == "reigh" else None
            return PostgresStore(url, min_size=1, max_size=2, change_probe_s=probe)
        store = PostgresStore(url, min_size=1, max_size=2)
        return store if mode == "notify" else _PollingOnly(store)

    scaler = Scaler(
        settings,
        holder=f"bench-{mode}",
        name=f"scaler-{mode}",
        lifecycles=remote.lifecycle_directory(settings),
        store_factory=store_factory,
    )
    store = PostgresStore(url, min_size=1, max_size=2)
    time.sleep(2 * cycle_interval_s)  # leader, idle
    to_decision: list[float] = []
    to_create: list[float] = []
    try:
        for i in range(samples):
            time.sleep(random.uniform(0, cycle_interval_s))
            before = len(deploys)
            decided = len([d for d in store.list_decisions() if d.spawn_count > 0])
            t0 = time.time()
            if app is not None:
                app.insert()
            else:
                store.insert_tasks([NewTask(task_type="travel_segment", user_id=f"user-{i}")])
            deadline = time.monotonic() + 4 * cycle_interval_s + 30
            while len(deploys) == before and time.monotonic() < deadline:
                time.sleep(0.005)
            if len(deploys) > before:
                to_create.append(deploys[before] - t0)
            spawns = [d for d in store.list_decisions() if d.spawn_count > 0]
            if len(spawns) > decided and spawns[decided].at is not None:
                to_decision.append(spawns[decided].at.timestamp() - t0)
    finally:
        scaler.stop()
        for row in store.list_workers(include_terminated=True):
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(f"worker:{row.id}", namespace="gpu-orchestrator"), no_restart=True)
        store.close()
    label = {
        "notify": "native, notifications",
        "poll": f"native, polling ({cycle_interval_s:g}s)",
        "reigh": f"reigh, new-task probe ({settings.queue.new_task_probe_s:g}s)",
        "reigh-cycle": f"reigh, cycle only ({cycle_interval_s:g}s)",
    }[mode]
    print(f"{label:24s} insert -> decision recorded: {summary(to_decision)}")
    print(f"{label:24s} insert -> provider create:   {summary(to_create)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--cycle-interval", type=float, default=5.0)
    parser.add_argument(
        "--modes",
        default="notify,poll,reigh,reigh-cycle",
        help="native with NOTIFY (notify), native polling only (poll), the reigh profile, which may put no "
        "trigger on the app's tasks: probing for new tasks between cycles (reigh) or waiting for the cycle "
        "(reigh-cycle)",
    )
    args = parser.parse_args()
    import ray

    ray.init(num_cpus=2, namespace="gpu-orchestrator", include_dashboard=False, log_to_driver=False)
    try:
        for mode in args.modes.split(","):
            run(mode, args.samples, args.cycle_interval)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
