"""How big a fleet the actors supervise, measured with the real actors on a multi-node Ray.

Starts its own Ray cluster of local processes (`ray.cluster_utils.Cluster`: a head, where the
Scaler's StoreGateway lives, and `--nodes` worker nodes advertising `--node-slots` lifecycle slots;
never attaches to another cluster, and kills only its own processes) and its own throwaway
Postgres, then brings up N real WorkerLifecycle actors (Ray actors, num_cpus=0, spread over the
worker nodes, each polling its worker row through the StoreGateway and its pod through the
gateway's shared pod list, like in production) and cycles a Scaler over a fleet of `--rows` worker
rows (the N supervised by real lifecycles, the rest rows whose pods exist at the loopback RunPod
API: this machine cannot hold 1,000 lifecycle processes) with 100,000 queued tasks from 1,000 users.

Prints: USS per lifecycle actor (psutil over the actors' pids: mean, max, total; target <= 55 MiB),
the modules a lifecycle has loaded (no psycopg, no runpod), the USS/RSS of all the Ray processes,
the number of nodes and where the lifecycles run, the time to bring up the N, the database
connections by application (the orchestrator's must not grow with the fleet: target <= 10), the
time until a removed node's lifecycles are back on the others, and the Scaler's cycle time p50/p95
over `--rows` pod rows (target: p95 under 100 ms).

The supervised pods are loopback RunPod pods (tests/support/runpod_api.py, served by a child
process that also heartbeats for them, so every worker stays `active`) driven through the real SDK
(in the StoreGateway, for the shared pod list, and in the Scaler). The Scaler runs in this
process (to time `step()` exactly) with the real RayLifecycles directory for the N (its cycles
re-attach them by name, as the Scaler actor does) and a no-op for the row-only workers (a cached
handle: what ensure() costs for a known lifecycle).

    .venv/bin/python bench/fleet_scale.py [--lifecycles 100] [--rows 1000] [--nodes 2] [--tasks 100000] [--cycles 30]
    .venv/bin/python bench/fleet_scale.py --rows-only [--profile]   # the Scaler cycle alone, + its floor
    .venv/bin/python bench/fleet_scale.py --rows-only --baseline-tree /tmp/base   # + the cycle of an older
        checkout (`git worktree add /tmp/base <commit>`) first, same data, same run
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
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


def _pods_and_workers(url: str, n: int, total: int, every_s: float, conn: Any) -> None:
    """A child process: the loopback RunPod API with the fleet's pods, the worker rows, and the
    workers' heartbeats. Kept out of the bench's own process, where the timed Scaler runs: its GIL
    is then shared with nothing a production Scaler does not share it with."""
    from store.postgres import PostgresStore
    from tests.support.runpod_api import FakeRunPodApi

    store = PostgresStore(url, min_size=1, max_size=2, application_name="bench")
    with FakeRunPodApi(api_key="bench-key") as api:
        ids = _fleet_rows(store, api, n, "a")
        rows_only = _fleet_rows(store, api, total - n, "b")
        stop = threading.Event()
        beats = threading.Thread(target=_heartbeats, args=(store, ids + rows_only, stop, every_s), daemon=True)
        beats.start()
        conn.send((api.base_url, api.api_key, ids, rows_only))
        conn.recv()  # until the bench is done
        stop.set()
        conn.send({"deploy": api.count("deploy"), "pods": api.count("pods"), "pod": api.count("pod")})
    store.close()


def _heartbeats(store: Any, ids: list[str], stop: threading.Event, every_s: float) -> None:
    """What the workers in the pods would do: one heartbeat each per heartbeat interval, spread over the
    interval as independent workers' beats are (not all 1,000 in one burst every interval)."""
    step = every_s / max(1, len(ids))
    due = time.monotonic()
    while True:
        for worker_id in ids:
            due += step
            if stop.wait(max(0.0, due - time.monotonic())):
                return
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


def _bare_actor_uss(resource: str, count: int = 4) -> float:
    """Mean USS of do-nothing Ray actors placed like lifecycles: the floor a lifecycle is measured against."""
    import ray

    @ray.remote(num_cpus=0)
    class Bare:
        def pid(self) -> int:
            return os.getpid()

    actors = [
        Bare.options(resources={resource: 1}, scheduling_strategy="SPREAD").remote()  # type: ignore[attr-defined]
        for _ in range(count)
    ]
    pids = ray.get([a.pid.remote() for a in actors], timeout=300)
    time.sleep(5)
    uss = [_uss(pid)[0] for pid in pids]
    for actor in actors:
        ray.kill(actor)
    return statistics.fmean(uss) / MIB


def _print_memory(pids: list[int], floor_mib: float) -> None:
    """USS of the lifecycles beside `floor_mib`, a bare Ray actor's measured in the same run."""
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
    print(
        f"  a bare Ray actor placed the same way (the floor, same run): {floor_mib:.1f} MiB USS; "
        f"the lifecycle's own: +{total / n / MIB - floor_mib:.1f} MiB"
    )
    print(
        f"  -> target <= 55 MiB per lifecycle; 1,000 pods: "
        f"{1000 * total / n / MIB / 1024:.1f} GiB of lifecycle actors over the nodes"
    )
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


def _connections(url: str) -> dict[str, int]:
    """Client connections to the bench's database by application name (this query's own left out)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, application_name="bench-count") as conn:
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid() GROUP BY 1"
        ).fetchall()
    return {str(name): int(n) for name, n in rows}


def _bring_up(ids: list[str], settings: Any) -> tuple[list[Any], list[int]]:
    import ray

    from actors import remote

    t0 = time.perf_counter()
    handles = [remote.get_or_create_lifecycle(worker_id, settings) for worker_id in ids]
    places: list[dict[str, Any]] = ray.get([h.where.remote() for h in handles], timeout=1800)
    pids = [p["pid"] for p in places]
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


class _RealAndRows:
    """The Scaler's directory: the real RayLifecycles for the supervised workers, a cached no-op for
    the row-only ones (what ensure() costs for a lifecycle it already knows)."""

    def __init__(self, real: Any, real_ids: set[str]) -> None:
        self._real = real
        self._real_ids = real_ids
        self._rows: set[str] = set()

    def __len__(self) -> int:
        return len(self._real) + len(self._rows)

    def ensure(self, worker_id: str) -> None:
        if worker_id in self._real_ids:
            self._real.ensure(worker_id)
        else:
            self._rows.add(worker_id)

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None:
        raise AssertionError(f"the bench fleet never drains ({worker_id}: {reason})")

    def keep_only(self, worker_ids: set[str]) -> None:
        self._real.keep_only(worker_ids & self._real_ids)
        self._rows &= worker_ids


class _NoLifecycles(_RealAndRows):
    """The rows-only form's directory: every worker a cached no-op (no live lifecycle at all)."""

    def __init__(self) -> None:
        super().__init__(None, set())

    def __len__(self) -> int:
        return len(self._rows)

    def keep_only(self, worker_ids: set[str]) -> None:
        self._rows &= worker_ids


class _GcPauses:
    """The time the garbage collector paused this process (any thread) while the block ran."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._began = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began

    def __enter__(self) -> _GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)


def _floor(scaler: Any, prefix: str, calls: int = 15) -> None:
    """The bare cost of the two reads every timed cycle makes: one list_workers of every row, one
    provider list of every pod (the Scaler's own store and provider, same run, same data)."""
    timings: dict[str, list[float]] = {"list_workers": [], "provider list": []}
    counts: dict[str, int] = {}
    for _ in range(calls):
        for label, fn in (
            ("list_workers", lambda: scaler._store.list_workers(on_malformed=lambda *_: None)),
            ("provider list", lambda: scaler._provider.list(prefix)),
        ):
            t0 = time.perf_counter()
            counts[label] = len(fn())
            timings[label].append(time.perf_counter() - t0)
    for label, values in timings.items():
        print(f"  floor: one {label} of {counts[label]}: {summary(values, 'ms', 1000)}")


def _cycle(
    settings: Any,
    cycles: int,
    gap_s: float,
    label: str,
    real_ids: set[str],
    url: str,
    profile: bool = False,
    rows_only: bool = False,
) -> None:
    from actors.scaler import Scaler

    if rows_only:
        directory: Any = _NoLifecycles()
    else:
        from actors import remote

        directory = _RealAndRows(remote.lifecycle_directory(settings), real_ids)
    # The Scaler's loop runs a cycle every cycle_interval_s; the timed cycles come every gap_s, so that is
    # its interval here (its pod list is then taken ahead of each cycle, as in production).
    scaling = settings.scaling.model_copy(update={"cycle_interval_s": gap_s})
    scaler_settings = settings.model_copy(update={"scaling": scaling})
    scaler = Scaler(scaler_settings, holder="bench", name="scaler-bench", lifecycles=directory, start=False)
    scaler.step()  # lease + rebuild + re-attach every live lifecycle by name
    totals: list[float] = []
    cpu: list[float] = []  # CPU time of the cycle in this thread: what other processes' load barely moves
    gc_pauses: list[float] = []  # the garbage collector's pauses within each cycle
    phases: dict[str, list[float]] = {}
    profiler = cProfile.Profile() if profile else None
    started = time.monotonic()
    for _ in range(cycles):
        # Cycles `gap_s` apart, start to start, as the Scaler's loop runs them (the lifecycles poll in between).
        time.sleep(max(0.05, started + gap_s - time.monotonic()))
        started = time.monotonic()
        if profiler is not None:
            profiler.enable()
        cpu0 = time.thread_time()
        with _GcPauses() as pauses:
            report = scaler.step()
        cpu.append(time.thread_time() - cpu0)
        gc_pauses.append(pauses.seconds)
        if profiler is not None:
            profiler.disable()
        totals.append(report["last_cycle_s"])
        for name, seconds in report["phase_s"].items():
            phases.setdefault(name, []).append(seconds)
        assert not report["phase_errors"], report["phase_errors"]
    print(f"scaler cycle {label}: {summary(totals, 'ms', 1000)} (target < 100 ms)")
    print(f"  CPU time of the cycle in the Scaler's thread: {summary(cpu, 'ms', 1000)}")
    print(f"  garbage collector pauses within a cycle: {summary(gc_pauses, 'ms', 1000)}")
    print(f"  provider lists in the timed cycles: {scaler._provider_lists}")
    _floor(scaler, settings.provider.name_prefix)
    for name, values in phases.items():
        print(f"  phase {name:8s} {summary(values, 'ms', 1000)}")
    if profiler is not None:  # where the cycle goes (cProfile slows it: the timings above are then not the figure)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    print(f"  lifecycles known to the Scaler: {len(scaler._lifecycles)}")
    print(f"  last decision: {scaler.status()['last_decision']['reasons'][0][:160]}")
    print(f"database connections with the Scaler running too: {_connections(url)} (target <= 10)")
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


def _start_cluster(args: argparse.Namespace, resource: str, temp_dir: Path) -> Any:
    """Head (the StoreGateway's node; `--head-slots` lifecycle slots) and `--nodes` worker nodes."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": args.num_cpus,
            "resources": {resource: args.head_slots} if args.head_slots else {},
            "temp_dir": str(temp_dir),
            "include_dashboard": False,
            # A lost node is noticed within ~3 s (Ray's default is ~30 s).
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=args.num_cpus, resources={resource: args.node_slots or args.lifecycles + 4})
    return cluster


def _where(handles: list[Any], timeout_s: float = 30.0) -> list[dict[str, Any]]:
    import ray

    return list(ray.get([h.where.remote() for h in handles], timeout=timeout_s))


def _spread(places: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for place in places:
        counts[place["node_id"][:8]] = counts.get(place["node_id"][:8], 0) + 1
    return counts


def _lose_a_node(cluster: Any, handles: list[Any]) -> None:
    """Remove the worker node with the most lifecycles; time until every lifecycle answers from another."""
    import ray

    places = _where(handles)
    counts = _spread(places)
    lost = max(cluster.worker_nodes, key=lambda node: counts.get(node.node_id[:8], 0))
    moved = counts.get(lost.node_id[:8], 0)
    t0 = time.perf_counter()
    cluster.remove_node(lost, allow_graceful=False)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            after = _where(handles, timeout_s=10)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            continue
        if all(p["node_id"] != lost.node_id for p in after):
            back_s = time.perf_counter() - t0
            print(
                f"node loss: {moved} lifecycles of the removed node back on the others in {back_s:.1f}s "
                f"(Ray notices a lost node in ~3 s here, ~30 s by default); now {_spread(after)}"
            )
            return
        time.sleep(0.5)
    print("node loss: the lifecycles were NOT back within 600 s")


def bench_rows(url: str, args: argparse.Namespace) -> None:
    """`--rows-only`: no Ray, no lifecycle; the Scaler cycles over `--rows` rows whose pods exist at
    the loopback RunPod API (the cycle's cost at 1,000 rows without the load of live lifecycles)."""
    import multiprocessing

    from store.postgres import PostgresStore

    state_dir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    store = PostgresStore(url, min_size=1, max_size=2, application_name="bench")
    _queue(store, args.tasks, args.users)
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    fleet = multiprocessing.get_context("spawn").Process(
        target=_pods_and_workers, args=(url, 0, args.rows, 10.0, theirs), daemon=True
    )
    fleet.start()
    try:
        base_url, _key, _ids, _rows = ours.recv()
        # Timed cycles `--cycle-gap-s` apart, as the Scaler's loop runs them every cycle_interval_s.
        knobs = {"max_workers": args.rows, "idle_timeout_s": 86_400.0, "cycle_interval_s": args.cycle_gap_s}
        settings = settings_for(url, state_dir, base_url, pool_max_size=8, **knobs)
        for round_ in range(1, args.rounds + 1):  # before and after in turns: the machine's load drifts
            print(f"load average {os.getloadavg()[0]:.1f}; round {round_} of {args.rounds}", flush=True)
            if args.baseline_tree:
                _baseline_cycle(args.baseline_tree, url, base_url, knobs, args, state_dir / "baseline")
            print(f"AFTER (this checkout, {_commit(Path(__file__).resolve().parents[1])}):")
            _cycle(
                settings,
                args.cycles,
                args.cycle_gap_s,
                f"with {args.rows} pod rows (none supervised by a live lifecycle), {args.tasks} queued tasks",
                set(),
                url,
                profile=args.profile,
                rows_only=True,
            )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
        store.close()
        fleet.kill()


def _commit(tree: Path) -> str:
    import subprocess

    out = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def _baseline_cycle(
    tree: str, url: str, base_url: str, knobs: dict[str, Any], args: argparse.Namespace, state_dir: Path
) -> None:
    """The same rows-only cycle with the Scaler, store and provider of an older checkout `tree` (its own
    `bench/fleet_scale.py` `_cycle`), in a child process, against the same database and pods."""
    import json
    import subprocess

    print(f"BEFORE ({tree}, {_commit(Path(tree))}):", flush=True)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(Path(tree).resolve())!r})\n"
        "from bench._fleet_bench import settings_for\n"
        "from bench.fleet_scale import _cycle\n"
        "import actors.scaler\n"
        "print('  the Scaler of', actors.scaler.__file__, flush=True)\n"
        "a = json.loads(sys.argv[1])\n"
        "s = settings_for(a['url'], Path(a['state']), a['base_url'], pool_max_size=8, **a['knobs'])\n"
        "_cycle(s, a['cycles'], a['gap'], f\"with {a['rows']} pod rows (baseline)\", set(), a['url'], rows_only=True)\n"
    )
    payload = {"url": url, "base_url": base_url, "knobs": knobs, "cycles": args.cycles, "gap": args.cycle_gap_s}
    payload.update(rows=args.rows, state=str(state_dir))
    subprocess.run([sys.executable, "-c", script, json.dumps(payload)], cwd=tree, check=True)


def bench(url: str, args: argparse.Namespace) -> None:
    import multiprocessing

    import ray

    from actors import remote
    from store.postgres import PostgresStore
    from tests.multinode.conftest import kill_processes_of

    n = args.lifecycles
    total = max(args.rows, n)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-state-"))
    store = PostgresStore(url, min_size=1, max_size=2, application_name="bench")
    _queue(store, args.tasks, args.users)
    heartbeat_s = 10.0  # the production default: settings_for keeps it
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    fleet = multiprocessing.get_context("spawn").Process(
        target=_pods_and_workers, args=(url, n, total, heartbeat_s, theirs), daemon=True
    )
    fleet.start()
    base_url, _key, ids, _rows_only = ours.recv()
    # Production defaults for the pools (the Scaler's 8, the gateway's 3), the poll period (min of
    # heartbeat and cycle interval: 10 s) and the cycle interval. 30 s to connect: 100 processes
    # starting at once on 2 cores can take more than the default 5 s.
    settings = settings_for(
        url,
        state_dir,
        base_url,
        pool_max_size=8,
        connect_timeout_s=30.0,
        max_workers=min(total, 1000),
        idle_timeout_s=86_400.0,
    )
    assert settings.scaling.heartbeat_interval_s == heartbeat_s
    temp_dir = Path(tempfile.mkdtemp(prefix="rfs-", dir="/tmp"))
    cluster = _start_cluster(args, settings.ray.lifecycle_resource, temp_dir)
    ray.init(address=cluster.address, namespace=settings.ray.namespace, log_to_driver=False)
    try:
        print(f"ray: {len([x for x in ray.nodes() if x['Alive']])} nodes (head + {args.nodes} worker nodes)")
        handles, pids = _bring_up(ids, settings)
        time.sleep(args.settle_s)  # a poll or two in steady state
        places = _where(handles)
        head_id = cluster.head_node.node_id
        print(f"lifecycles by node: {_spread(places)} (head {head_id[:8]})")
        gateway = remote.get_or_create_store_gateway(settings)
        print(f"store gateway on the head: {ray.get(gateway.where.remote())['node_id'] == head_id}")
        loaded = ray.get(handles[0].loaded_modules.remote(list(remote.NOT_IN_A_LIFECYCLE)))
        print(f"modules a lifecycle loaded of {', '.join(remote.NOT_IN_A_LIFECYCLE)}: {loaded or 'none'}")
        connections = _connections(url)
        print(
            f"database connections by application: {connections} "
            f"(gpu-orchestrator: the store gateway serving {n} lifecycles; target <= 10)"
        )
        _print_memory(pids, _bare_actor_uss(settings.ray.lifecycle_resource))
        # The cycle in steady state, before the node loss (50 restarting lifecycles share these cores).
        _cycle(
            settings,
            args.cycles,
            args.cycle_gap_s,
            f"with {total} pod rows ({n} supervised by live lifecycles), {args.tasks} queued tasks, {args.users} users",
            set(ids),
            url,
            profile=args.profile,
        )
        if args.nodes >= 2:
            _lose_a_node(cluster, handles)
            print(f"database connections after the node loss: {_connections(url)}")
        _compare_snapshots(url)
        states = ray.get([h.status.remote() for h in handles])
        errors = [s["last_error"] for s in states if s["last_error"]]
        by_state: dict[str, int] = {}
        for s in states:
            by_state[str(s["state"])] = by_state.get(str(s["state"]), 0) + 1
        steps = [s["steps"] for s in states]
        calls = ray.get(gateway.status.remote())["calls"]
        print(
            f"lifecycles after the cycles: states {by_state}, steps min {min(steps)} max {max(steps)}, "
            f"errors {len(errors)} {errors[:1]}; the gateway served {calls} calls"
        )
        ours.send("done")
        print(f"loopback RunPod API calls (deploy = pods created; pods = list; pod = get): {ours.recv()}")
        stops = [handle.stop.remote() for handle in handles]  # all at once: one by one took minutes
        for handle, stop in zip(handles, stops, strict=True):
            try:  # a lifecycle that does not answer must not hang the bench after its figures
                ray.get(stop, timeout=30)
            except Exception as exc:
                print(f"a lifecycle did not stop: {type(exc).__name__}: {exc}")
            ray.kill(handle, no_restart=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        kill_processes_of(str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)
        store.close()
        fleet.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lifecycles", type=int, default=100, help="real WorkerLifecycle actors (= supervised pods)")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--cycle-gap-s", type=float, default=1.0, help="pause between timed Scaler cycles")
    parser.add_argument("--settle-s", type=float, default=15.0, help="steady-state wait before measuring memory")
    parser.add_argument("--rows", type=int, default=1000, help="worker rows the Scaler cycles over (>= lifecycles)")
    parser.add_argument("--nodes", type=int, default=2, help="Ray worker nodes (local processes)")
    parser.add_argument("--head-slots", type=int, default=0, help="lifecycle slots of the head node")
    parser.add_argument("--node-slots", type=int, default=0, help="lifecycle slots per worker node (0: --lifecycles)")
    parser.add_argument("--num-cpus", type=int, default=1, help="CPUs per Ray node (lifecycles use 0)")
    parser.add_argument("--max-connections", type=int, default=100, help="of the bench's throwaway Postgres")
    parser.add_argument("--profile", action="store_true", help="cProfile the timed Scaler cycles (top 25 functions)")
    parser.add_argument(
        "--rows-only", action="store_true", help="no Ray, no lifecycle: only the Scaler cycle over --rows rows"
    )
    parser.add_argument(
        "--baseline-tree", default="", help="--rows-only: first the same cycle of this older checkout (a git worktree)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="--rows-only: before and after, N times")
    args = parser.parse_args()

    with postgres(max_connections=args.max_connections) as url:
        (bench_rows if args.rows_only else bench)(url, args)


if __name__ == "__main__":
    main()
