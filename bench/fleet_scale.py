"""How big a fleet the actors supervise on this 2-core machine.

Prints: memory (USS) per WorkerLifecycle actor and the extrapolation to 100 pods (target: within
24 GiB), the time to bring up N lifecycles, and the Scaler's cycle time with 100 supervised pods
and 100,000 queued tasks from 1,000 users (target: under 100 ms).

Pods are loopback RunPod pods (tests/support/runpod_api.py) driven through the real SDK; the bench
heartbeats for them, so every lifecycle stays `active` and polls its pod like in production.

    .venv/bin/python bench/fleet_scale.py [--lifecycles 40] [--pods 100] [--tasks 100000] [--users 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet_bench import postgres, settings_for, summary


def _fleet_rows(store, api, count: int, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    from fleet.models import WorkerState

    ids = []
    for i in range(count):
        worker_id = f"gpu-20250101_000000-{prefix}{i:06x}"[:29]
        pod_id = api.add_pod(worker_id)
        store.create_worker(worker_id, reason="bench: fleet set-up")
        store.set_worker_pod(worker_id, pod_id, "NVIDIA GeForce RTX 4090")
        store.worker_heartbeat(worker_id)
        store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: bench set-up")
        ids.append(worker_id)
    return ids


def _heartbeats(store, ids: list[str], stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    while not stop.wait(2.0):
        for worker_id in ids:
            store.worker_heartbeat(worker_id)


def bench_lifecycles(url: str, api, n: int, state_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import psutil
    import ray

    from actors import remote
    from store.postgres import PostgresStore

    settings = settings_for(url, state_dir, api.base_url, cycle_interval_s=5.0, heartbeat_interval_s=5.0)
    store = PostgresStore(url, min_size=1, max_size=2)
    ids = _fleet_rows(store, api, n, "a")
    stop = threading.Event()
    threading.Thread(target=_heartbeats, args=(store, ids, stop), daemon=True).start()
    t0 = time.perf_counter()
    handles = [remote.get_or_create_lifecycle(worker_id, settings) for worker_id in ids]
    pids = ray.get([h.pid.remote() for h in handles], timeout=900)
    up_s = time.perf_counter() - t0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states = ray.get([h.status.remote() for h in handles])
        if all(s["steps"] >= 1 for s in states):
            break
        time.sleep(1)
    time.sleep(6)  # a poll or two in steady state
    uss = [psutil.Process(pid).memory_full_info().uss for pid in pids]
    rss = [psutil.Process(pid).memory_info().rss for pid in pids]
    mib = 1024 * 1024
    per = statistics.fmean(uss) / mib
    print(f"lifecycles: {n} brought up in {up_s:.1f}s ({up_s / n:.2f}s each, 2 cores)")
    rss_mean = statistics.fmean(rss) / mib
    print(f"lifecycle USS: mean {per:.0f} MiB, max {max(uss) / mib:.0f} MiB; RSS mean {rss_mean:.0f} MiB")
    print(f"100 pods -> {100 * per / 1024:.1f} GiB of lifecycle actors (target <= 24 GiB)")
    errors = [s["last_error"] for s in ray.get([h.status.remote() for h in handles]) if s["last_error"]]
    print(f"lifecycle errors: {len(errors)} {errors[:1]}")
    stop.set()
    for handle in handles:
        ray.get(handle.stop.remote())
        ray.kill(handle, no_restart=True)
    store.close()


class _NoLifecycles:
    """The Scaler's lifecycle directory without actors: this bench times the cycle, not Ray."""

    def __len__(self) -> int:
        return 0

    def ensure(self, worker_id: str) -> None:
        pass

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None:
        pass

    def keep_only(self, worker_ids: set[str]) -> None:
        pass


def bench_cycle(url: str, api, pods: int, tasks: int, users: int, state_dir: Path, cycles: int) -> None:  # type: ignore[no-untyped-def]
    from actors.scaler import Scaler
    from store.base import NewTask
    from store.postgres import PostgresStore

    store = PostgresStore(url, min_size=1, max_size=2)
    _fleet_rows(store, api, pods, "b")
    t0 = time.perf_counter()
    batch = 5000
    for start in range(0, tasks, batch):
        store.insert_tasks(
            [
                NewTask(task_type="travel_segment", user_id=f"user-{i % users}", params={"duration_s": 60})
                for i in range(start, min(tasks, start + batch))
            ]
        )
    print(f"queued {tasks} tasks from {users} users in {time.perf_counter() - t0:.1f}s")
    settings = settings_for(url, state_dir, api.base_url, max_workers=pods, cycle_interval_s=10.0)
    scaler = Scaler(
        settings, holder="bench", name="scaler-bench", lifecycles=_NoLifecycles(), probe_log_shipper=False, start=False
    )
    scaler.step()  # lease + rebuild
    totals, phases = [], {}
    for _ in range(cycles):
        report = scaler.step()
        totals.append(report["last_cycle_s"])
        for name, seconds in report["phase_s"].items():
            phases.setdefault(name, []).append(seconds)
        assert not report["phase_errors"], report["phase_errors"]
    print(
        f"scaler cycle with {pods} pods, {tasks} queued tasks, {users} users: {summary(totals, 'ms', 1000)}"
        " (target < 100 ms)"
    )
    for name, values in phases.items():
        print(f"  phase {name:8s} {summary(values, 'ms', 1000)}")
    print(f"  last decision: {scaler.status()['last_decision']['reasons'][0][:160]}")
    _compare_snapshots(url, store)
    store.close()


def _compare_snapshots(url: str, store) -> None:  # type: ignore[no-untyped-def]
    """Same run, same data: demand_snapshot as 0002 defined it (the baseline) against the current one."""
    import re

    import psycopg

    from store import migrate

    sql = next(m.sql for m in migrate.load_migrations() if m.name == "0002_functions")
    body = re.search(r"CREATE OR REPLACE FUNCTION demand_snapshot\(.*?\n\$\$;", sql, re.S)
    assert body is not None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(body.group(0).replace("FUNCTION demand_snapshot(", "FUNCTION bench_demand_snapshot_0002(", 1))
        timings: dict[str, list[float]] = {"0002 (baseline)": [], "current": []}
        answers = {}
        for _ in range(15):
            for label, fn in (("0002 (baseline)", "bench_demand_snapshot_0002"), ("current", "demand_snapshot")):
                t0 = time.perf_counter()
                answers[label] = conn.execute(f"SELECT {fn}(3) - 'taken_at'").fetchone()
                timings[label].append(time.perf_counter() - t0)
        conn.execute("DROP FUNCTION bench_demand_snapshot_0002(integer)")
    base, now = (statistics.median(timings[k]) for k in ("0002 (baseline)", "current"))
    for label, values in timings.items():
        print(f"  demand_snapshot {label:16s} {summary(values, 'ms', 1000)}")
    same = answers["0002 (baseline)"] == answers["current"]
    print(f"  demand_snapshot current/baseline p50 = {now / base:.2f} (same answer: {same})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=40, help="WorkerLifecycle actors to start (<= ~80)")
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args()

    import ray

    from tests.support.runpod_api import FakeRunPodApi

    state_dir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    with postgres() as url, FakeRunPodApi(api_key="bench-key") as api:
        bench_cycle(url, api, args.pods, args.tasks, args.users, state_dir, args.cycles)
        if args.lifecycles:
            ray.init(num_cpus=2, namespace="gpu-orchestrator", include_dashboard=False, log_to_driver=False)
            try:
                bench_lifecycles(url, api, args.lifecycles, state_dir)
            finally:
                ray.shutdown()


if __name__ == "__main__":
    main()
