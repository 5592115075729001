"""The queue at scale: claim_next_task beside a bare SKIP LOCKED dequeue, demand_snapshot, Scaler wake-ups.

A throwaway embedded Postgres migrated like `orchestrator migrate` (store.migrate.apply_migrations).
For each depth (1k, 10k, 100k, 1M; ~30 s for 1M on this machine when it is quiet, ~3 min under
load, most of it the INSERT) a database of its own, filled by one
generate_series INSERT (the tasks' triggers keep queue_users as they would for any writer) with
the distribution of issue 13: 1,000 users; the oldest 40% of the Queued tasks belong to 400 users
already at their per-user limit (3 In Progress each); one Queued task in ten waits for a task that
is In Progress (not complete). Then, after VACUUM ANALYZE, in the same run and interleaved:

- claim: one active worker claims and completes 200 tasks (`SELECT claim_next_task('w')`, timed
  alone; the completion is not timed);
- bare: `SELECT id FROM tasks WHERE status = 'Queued' ORDER BY created_at, id LIMIT 1 FOR UPDATE
  SKIP LOCKED` on the same table (the oldest row, locked and let go), the floor of any dequeue;
- typed claim (`claim_next_task('w', ARRAY['gpu'])`, the path with task types) and the
  completions (`complete_task`), for information;
- demand: `SELECT demand_snapshot()`, 50 times.

Times are client round trips on one connection (p50 / p95 in ms). Last, the Scaler's wake-ups: a
real Scaler (fake provider and lifecycles, max_workers 0, cycle_interval_s 10) leads over a
database while 100 tasks a second are inserted one by one for 10 s, with wake_debounce_s 0 and 1;
it prints wake-ups, cycles and provider lists per second.

    .venv/bin/python bench/queue_scale.py [--sizes 1000,10000] [--no-scaler]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet_bench import postgres

USERS = 1000
AT_LIMIT_USERS = 400
LIMIT = 3
CLAIMS = 200


def _fill(conn: psycopg.Connection[Any], queued: int) -> float:
    """The issue's distribution; returns the seconds the INSERTs took."""
    t0 = time.perf_counter()
    conn.execute(f"SELECT configure_queue({LIMIT}, 3)")
    conn.execute(
        "INSERT INTO workers (id, status, promoted_at) VALUES ('busy', 'active', now()), ('w', 'active', now())"
    )
    # the users at their limit: 3 In Progress tasks each, held by another worker
    conn.execute(
        """INSERT INTO tasks (id, task_type, user_id, status, worker_id, claimed_at, attempts, created_at)
           SELECT 'ip' || g, 'gpu', 'u' || (g %% %s), 'In Progress', 'busy', now(), 1,
                  timestamptz '2026-01-01' + g * interval '1 ms'
           FROM generate_series(0, %s - 1) g""",
        (AT_LIMIT_USERS, AT_LIMIT_USERS * LIMIT),
    )
    # the oldest 40% of the queue from those 400 users, the rest from the other 600; one in ten
    # waits for an In Progress task
    conn.execute(
        """INSERT INTO tasks (id, task_type, user_id, depends_on, created_at)
           SELECT 'q' || g, 'gpu',
                  CASE WHEN g < %(head)s THEN 'u' || (g %% %(at_limit)s)
                       ELSE 'u' || (%(at_limit)s + g %% %(others)s) END,
                  CASE WHEN g %% 10 = 5 THEN 'ip' || (g %% %(in_progress)s) END,
                  timestamptz '2026-02-01' + g * interval '1 ms'
           FROM generate_series(0, %(n)s - 1) g""",
        {
            "head": int(queued * 0.4),
            "at_limit": AT_LIMIT_USERS,
            "others": USERS - AT_LIMIT_USERS,
            "in_progress": AT_LIMIT_USERS * LIMIT,
            "n": queued,
        },
    )
    took = time.perf_counter() - t0
    conn.execute("VACUUM ANALYZE")
    return took


def _pcts(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[max(0, round(0.95 * len(ordered)) - 1)]


def _timed(conn: psycopg.Connection[Any], query: str) -> tuple[float, Any]:
    t0 = time.perf_counter()
    row = conn.execute(query).fetchone()
    return 1000 * (time.perf_counter() - t0), row[0] if row else None


def _measure(url: str, queued: int) -> dict[str, Any]:
    name = f"q{queued}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{admin.info.dbname}"'.encode())
    db = psycopg.conninfo.make_conninfo(url, dbname=name, options="-c search_path=orchestrator,public")
    with psycopg.connect(db, autocommit=True) as conn:
        fill_s = _fill(conn, queued)
        claim, bare, typed, complete = [], [], [], []
        claimed: set[str] = set()
        for _ in range(CLAIMS):
            ms, bare_id = _timed(
                conn,
                "SELECT id FROM tasks WHERE status = 'Queued' ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            bare.append(ms)
            ms, task = _timed(conn, "SELECT claim_next_task('w')")
            claim.append(ms)
            assert task is not None and bare_id is not None
            assert int(task["user_id"][1:]) >= AT_LIMIT_USERS and not task["depends_on"], task
            claimed.add(task["id"])
            t0 = time.perf_counter()
            conn.execute("SELECT complete_task(%s, 'w')", (task["id"],))
            complete.append(1000 * (time.perf_counter() - t0))
            ms, task = _timed(conn, "SELECT claim_next_task('w', ARRAY['gpu'])")
            typed.append(ms)
            assert task is not None
            conn.execute("SELECT complete_task(%s, 'w')", (task["id"],))
        demand = []
        answer: Any = None
        for _ in range(50):
            ms, answer = _timed(conn, "SELECT demand_snapshot()")
            demand.append(ms)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}"'.encode())
    return {
        "fill_s": fill_s,
        "claim": _pcts(claim),
        "bare": _pcts(bare),
        "typed": _pcts(typed),
        "complete": _pcts(complete),
        "demand": _pcts(demand),
        "answer": answer,
    }


class _Provider:
    """A provider with no pods that counts its list calls."""

    name = "bench"

    def __init__(self) -> None:
        self.lists = 0

    def list(self, prefix: str) -> list[Any]:
        self.lists += 1
        return []

    def __getattr__(self, attr: str) -> Any:
        raise AttributeError(attr)


class _Lifecycles:
    def __len__(self) -> int:
        return 0

    def ensure(self, worker_id: str) -> None: ...

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None: ...

    def keep_only(self, worker_ids: set[str]) -> None: ...


def _wakeups(url: str, debounce_s: float, seconds: float = 10.0, rate: float = 100.0) -> dict[str, float]:
    """A leading Scaler while `rate` tasks a second are inserted one by one: its wake-ups, cycles
    and provider lists per second."""
    from actors.scaler import Scaler
    from config.settings import OrchestratorSettings

    state = Path(tempfile.mkdtemp(prefix="bench-scaler-"))
    settings = OrchestratorSettings(
        database={"backend": "postgres", "url": url, "pool_min_size": 1, "pool_max_size": 3},
        provider={"kind": "local", "name_prefix": "gpu-"},
        scaling={"max_workers": 0, "cycle_interval_s": 10.0, "wake_debounce_s": debounce_s},
        retention={"enabled": False},
        log_shipping={
            "spool_dir": state / "spool",
            "fallback_file": state / "fallback.jsonl",
            "dead_letter_file": state / "dead-letter.jsonl",
        },
        state_dir=state,
    )
    provider = _Provider()
    scaler = Scaler(
        settings,
        holder=f"bench/{debounce_s}",
        name=f"bench-scaler-{debounce_s}",
        lifecycles=_Lifecycles(),
        provider_factory=lambda _settings: provider,  # type: ignore[arg-type,return-value]
    )
    try:
        deadline = time.monotonic() + 15
        while scaler.status()["role"] != "leader" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        wakeups0, cycles0, lists0 = scaler._wakeups, scaler.status()["cycle"], provider.lists
        stop = threading.Event()

        def insert() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                start, n = time.monotonic(), 0
                while not stop.is_set():
                    conn.execute("INSERT INTO tasks (task_type, user_id) VALUES ('gpu', 'stream' || %s)", (n % 50,))
                    n += 1
                    pause = start + n / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)

        thread = threading.Thread(target=insert)
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join()
        return {
            "wakeups_per_s": (scaler._wakeups - wakeups0) / seconds,
            "cycles_per_s": (scaler.status()["cycle"] - cycles0) / seconds,
            "lists_per_s": (provider.lists - lists0) / seconds,
        }
    finally:
        scaler.stop("bench over")
        scaler._store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="queue depths, comma-separated")
    parser.add_argument("--no-scaler", action="store_true", help="skip the Scaler wake-up measurement")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with postgres() as url:
        print(
            f"{'queued':>9} {'fill s':>7} {'claim p50':>10} {'p95':>7} {'bare p50':>9} {'p95':>7} "
            f"{'p95 ratio':>9} {'typed p50':>10} {'p95':>7} {'demand p50':>11} {'p95':>7}"
        )
        for queued in sizes:
            r = _measure(url, queued)
            (c50, c95), (b50, b95), (t50, t95), (d50, d95) = r["claim"], r["bare"], r["typed"], r["demand"]
            print(
                f"{queued:>9,} {r['fill_s']:>7.1f} {c50:>10.2f} {c95:>7.2f} {b50:>9.2f} {b95:>7.2f} "
                f"{c95 / b95:>8.1f}x {t50:>10.2f} {t95:>7.2f} {d50:>11.2f} {d95:>7.2f}",
                flush=True,
            )
            print(
                f"{'':>9} complete_task p50 {r['complete'][0]:.2f} p95 {r['complete'][1]:.2f}; "
                f"demand answer: {r['answer']}",
                flush=True,
            )
        if not args.no_scaler:
            for debounce in (0.0, 1.0):
                w = _wakeups(url, debounce)
                print(
                    f"Scaler under 100 inserts/s, wake_debounce_s {debounce:g}: {w['wakeups_per_s']:.1f} wake-ups/s, "
                    f"{w['cycles_per_s']:.1f} cycles/s, {w['lists_per_s']:.2f} provider lists/s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
