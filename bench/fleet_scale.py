"""How big a fleet the actors supervise on this 2-core machine, measured with the real actors.

Starts its own local Ray (never attaches to another cluster) and its own throwaway Postgres with
max_connections raised, then brings up N real WorkerLifecycle actors (Ray actors, num_cpus=0, each
polling its worker row and its pod like in production) and cycles a Scaler over the same fleet
with 100,000 queued tasks from 1,000 users while the N lifecycles run.

Prints: USS per lifecycle actor (psutil over the actors' pids: mean, max, total; target: 100 pods
within 24 GiB), the USS/RSS of all the Ray processes, the time to bring up the N, the database
connections they hold, and the Scaler's cycle time p50/p95 (target: under 100 ms).

The supervised pods are loopback RunPod pods (tests/support/runpod_api.py, in this process) driven
through the real SDK; the bench heartbeats for them, so every worker stays `active`. The Scaler
runs in this process (to time `step()` exactly) with the real RayLifecycles directory: its cycles
re-attach the N live actors by name, as the Scaler actor does in production.

    .venv/bin/python bench/fleet_scale.py [--lifecycles 100] [--tasks 100000] [--users 1000] [--cycles 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet_bench import postgres, settings_for, summary

MIB = 1024 * 1024


def _fleet_rows(store: Any, api: Any, count: int, prefix: str) -> list[str]:
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


def _heartbeats(store: Any, ids: list[str], stop: threading.Event, every_s: float) -> None:
    """What the workers in the pods would do: one heartbeat each per heartbeat interval."""
    while not stop.wait(every_s):
        for worker_id in ids:
            store.worker_heartbeat(worker_id)


def _queue(store: Any, tasks: int, users: int) -> None:
    from store.base import NewTask

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


def _uss(pid: int) -> tuple[int, int]:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.memory_full_info().uss, proc.memory_info().rss
    except psutil.Error:
        return 0, 0


def _ray_processes() -> dict[str, list[int]]:
    """This bench's Ray processes (all descendants of this driver but Postgres), by kind."""
    import psutil

    kinds: dict[str, list[int]] = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            name, cmdline = proc.name(), " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "postgres" in name or "pginstall" in cmdline:
            continue
        if "gcs_server" in name or "gcs_server" in cmdline:
            kind = "gcs_server"
        elif name == "raylet" or "raylet" in cmdline.split(" ")[0]:
            kind = "raylet"
        elif name.startswith("ray::"):
            kind = name  # ray::WorkerLifecycle, ray::IDLE, ...
        else:
            scripts = [Path(arg).name for arg in proc.cmdline() if arg.endswith(".py")]
            kind = scripts[0] if scripts else name  # log_monitor.py, monitor.py, dashboard.py, ...
        kinds.setdefault(kind, []).append(proc.pid)
    return kinds


def _print_memory(pids: list[int]) -> None:
    n = len(pids)
    mem = [_uss(pid) for pid in pids]
    uss = [u for u, _ in mem]
    rss = [r for _, r in mem]
    total = sum(uss)
    print(
        f"lifecycle USS: {total / n / MIB:.1f} MiB per lifecycle (sum over {n} pids / {n}), "
        f"max {max(uss) / MIB:.1f} MiB, total {total / MIB / 1024:.2f} GiB; "
        f"RSS mean {statistics.fmean(rss) / MIB:.0f} MiB"
    )
    print(f"  -> 100 pods: {100 * total / n / MIB / 1024:.1f} GiB of lifecycle actors (target <= 24 GiB)")
    grand_uss = grand_rss = 0
    print("ray processes (USS / RSS):")
    for kind, kind_pids in sorted(_ray_processes().items()):
        kind_mem = [_uss(pid) for pid in kind_pids]
        k_uss, k_rss = sum(u for u, _ in kind_mem), sum(r for _, r in kind_mem)
        grand_uss, grand_rss = grand_uss + k_uss, grand_rss + k_rss
        print(f"  {kind:32s} x{len(kind_pids):<4d} USS {k_uss / MIB:8.1f} MiB  RSS {k_rss / MIB:8.1f} MiB")
    print(f"  {'all ray processes':32s}       USS {grand_uss / MIB:8.1f} MiB  RSS {grand_rss / MIB:8.1f} MiB")
    d_uss, d_rss = _uss(os.getpid())
    print(
        "  (driver: this bench + in-process Scaler + loopback RunPod API: "
        f"USS {d_uss / MIB:.0f} MiB, RSS {d_rss / MIB:.0f} MiB)"
    )


def _connections(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_type = 'client backend'"
        ).fetchone()
    return int(row[0]) - 1 if row else -1  # less this query's own


def _bring_up(ids: list[str], settings: Any) -> tuple[list[Any], list[int]]:
    import ray

    from actors import remote

    t0 = time.perf_counter()
    handles = [remote.get_or_create_lifecycle(worker_id, settings) for worker_id in ids]
    pids: list[int] = ray.get([h.pid.remote() for h in handles], timeout=1800)
    up_s = time.perf_counter() - t0
    n = len(ids)
    print(f"lifecycles: {n} real WorkerLifecycle actors up in {up_s:.1f}s ({up_s / n:.2f}s each, 2 cores)")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        states: list[dict[str, Any]] = ray.get([h.status.remote() for h in handles])
        if all(s["steps"] >= 1 for s in states):
            break
        time.sleep(1)
    print(f"  all {n} had done their first step {time.perf_counter() - t0:.1f}s after the first was asked for")
    return handles, pids


def _cycle(settings: Any, cycles: int, gap_s: float, label: str) -> None:
    from actors import remote
    from actors.scaler import Scaler

    scaler = Scaler(
        settings,
        holder="bench",
        name="scaler-bench",
        lifecycles=remote.lifecycle_directory(settings),
        start=False,
    )
    scaler.step()  # lease + rebuild + re-attach every live lifecycle by name
    totals: list[float] = []
    phases: dict[str, list[float]] = {}
    for _ in range(cycles):
        time.sleep(gap_s)  # the lifecycles poll in between, as they would between production cycles
        report = scaler.step()
        totals.append(report["last_cycle_s"])
        for name, seconds in report["phase_s"].items():
            phases.setdefault(name, []).append(seconds)
        assert not report["phase_errors"], report["phase_errors"]
    print(f"scaler cycle {label}: {summary(totals, 'ms', 1000)} (target < 100 ms)")
    for name, values in phases.items():
        print(f"  phase {name:8s} {summary(values, 'ms', 1000)}")
    print(f"  lifecycles known to the Scaler: {len(scaler._lifecycles)}")
    print(f"  last decision: {scaler.status()['last_decision']['reasons'][0][:160]}")
    scaler.stop()  # gives the lease up


# demand_snapshot as the first functions migration (0002_functions, since split by domain) defined it.
_DEMAND_SNAPSHOT_0002 = """
CREATE OR REPLACE FUNCTION bench_demand_snapshot_0002(p_per_user_limit integer DEFAULT NULL) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH lim AS (
        SELECT coalesce(p_per_user_limit::bigint, queue_setting('per_user_concurrency_limit', 3)) AS l
    ), queued AS (
        SELECT t.user_id, count(*) AS n,
               count(*) FILTER (WHERE t.depends_on IS NULL OR d.status = 'Complete') AS ready
        FROM tasks t LEFT JOIN tasks d ON d.id = t.depends_on
        WHERE t.status = 'Queued'
        GROUP BY t.user_id
    ), busy AS (
        SELECT user_id, count(*) AS n FROM tasks WHERE status = 'In Progress' GROUP BY user_id
    )
    SELECT jsonb_build_object(
        'queued', coalesce((SELECT sum(n) FROM queued), 0),
        'claimable', coalesce((
            SELECT sum(least(q.ready, greatest(0, lim.l - coalesce(b.n, 0))))
            FROM queued q LEFT JOIN busy b USING (user_id) CROSS JOIN lim), 0),
        'in_progress', coalesce((SELECT sum(n) FROM busy), 0),
        'taken_at', extract(epoch FROM now()))
$$;
"""


def _compare_snapshots(url: str) -> None:
    """Same run, same data: demand_snapshot as 0002 defined it (the baseline) against the current one."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_DEMAND_SNAPSHOT_0002)
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


def bench(url: str, api: Any, args: argparse.Namespace) -> None:
    import ray

    from store.postgres import PostgresStore

    n = args.lifecycles
    state_dir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    # Production defaults for the pool (the Scaler's 8; a lifecycle caps its own, see actors/lifecycle.py),
    # the poll period (min of heartbeat and cycle interval: 10 s) and the cycle interval.
    # 30 s to connect: 100 processes starting at once on 2 cores can take more than the default 5 s.
    settings = settings_for(
        url, state_dir, api.base_url, pool_max_size=8, connect_timeout_s=30.0, max_workers=n, idle_timeout_s=86_400.0
    )
    store = PostgresStore(url, min_size=1, max_size=2)
    ids = _fleet_rows(store, api, n, "a")
    _queue(store, args.tasks, args.users)
    stop = threading.Event()
    beats = threading.Thread(
        target=_heartbeats, args=(store, ids, stop, settings.scaling.heartbeat_interval_s), daemon=True
    )
    beats.start()
    before = _connections(url)
    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        namespace=settings.ray.namespace,
        include_dashboard=False,
        log_to_driver=False,
    )
    try:
        handles, pids = _bring_up(ids, settings)
        time.sleep(args.settle_s)  # a poll or two in steady state
        print(f"database connections: {_connections(url) - before} held by the {n} lifecycles ({before} by the driver)")
        _print_memory(pids)
        _cycle(
            settings,
            args.cycles,
            args.cycle_gap_s,
            f"with {n} live lifecycles, {args.tasks} queued tasks, {args.users} users",
        )
        _compare_snapshots(url)
        states = ray.get([h.status.remote() for h in handles])
        errors = [s["last_error"] for s in states if s["last_error"]]
        by_state: dict[str, int] = {}
        for s in states:
            by_state[str(s["state"])] = by_state.get(str(s["state"]), 0) + 1
        steps = [s["steps"] for s in states]
        print(
            f"lifecycles after the cycles: states {by_state}, steps min {min(steps)} max {max(steps)}, "
            f"errors {len(errors)} {errors[:1]}"
        )
        stop.set()
        for handle in handles:
            ray.get(handle.stop.remote())
            ray.kill(handle, no_restart=True)
    finally:
        stop.set()
        ray.shutdown()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=100, help="real WorkerLifecycle actors (= supervised pods)")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--cycle-gap-s", type=float, default=1.0, help="pause between timed Scaler cycles")
    parser.add_argument("--settle-s", type=float, default=15.0, help="steady-state wait before measuring memory")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the bench's own Ray (lifecycles use 0)")
    parser.add_argument("--max-connections", type=int, default=400, help="of the bench's throwaway Postgres")
    args = parser.parse_args()

    from tests.support.runpod_api import FakeRunPodApi

    with postgres(max_connections=args.max_connections) as url, FakeRunPodApi(api_key="bench-key") as api:
        bench(url, api, args)


if __name__ == "__main__":
    main()
