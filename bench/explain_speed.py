"""How fast `orchestrator explain` answers on a month of history. Prints figures; asserts nothing.

    .venv/bin/python bench/explain_speed.py [--days 30] [--worker-logs-per-minute 20] [--repeat 3]

Builds a throwaway embedded Postgres with every migration, fills it with a month of synthetic
history ending now (an orchestrator log every 10 s, a decision every 5 minutes, a worker every 10
minutes with five transitions and its tasks, and worker log rows), then times the real CLI
in-process (settings, connection pool, queries, rendering) for `--at` (a timestamp and a bare
time of day), `--worker`, and `--since/--until` over an hour and over a day. The goal is under two
seconds each. Rows go in with set-based SQL through the store's pool, as a benchmark may.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FILL_SQL = """
-- Orchestrator cycle logs: every 10 s.
INSERT INTO system_logs (id, at, level, source_type, source_id, message, cycle_number)
SELECT 'o-' || n, %(start)s + make_interval(secs => n * 10), 'INFO', 'orchestrator', 'scaler@bench',
       'Cycle completed: 0 spawned, 0 terminated', n
FROM generate_series(0, %(cycles)s - 1) AS n;

-- Worker log rows, spread over the month.
INSERT INTO system_logs (id, at, level, source_type, source_id, message, worker_id)
SELECT 'w-' || n, %(start)s + make_interval(secs => n * %(worker_log_step)s),
       'INFO', 'worker', 'gpu-bench-' || (n %% 500), 'heartbeat ok; processing task', 'gpu-bench-' || (n %% 500)
FROM generate_series(0, %(worker_logs)s - 1) AS n;

-- A worker every 10 minutes: created, promoted after 60-150 s, lives 40 min, drains, terminates.
INSERT INTO workers (id, status, pod_id, gpu_type, created_at, promoted_at, last_heartbeat_at, terminated_at,
                     termination_reason, trace_context, metadata)
SELECT 'gpu-bench-w' || n, 'terminated', 'pod' || n, 'NVIDIA GeForce RTX 4090',
       %(start)s + make_interval(secs => n * 600),
       %(start)s + make_interval(secs => n * 600 + 60 + n %% 90),
       %(start)s + make_interval(secs => n * 600 + 2400),
       %(start)s + make_interval(secs => n * 600 + 2410),
       'scale-down', '00-' || md5(n::text) || '-00f067aa0ba902b7-01', '{}'::jsonb
FROM generate_series(0, %(workers)s - 1) AS n;

INSERT INTO worker_events (worker_id, at, from_status, to_status, reason)
SELECT 'gpu-bench-w' || n, %(start)s + make_interval(secs => n * 600 + s.offset_s), s.frm, s.too, s.reason
FROM generate_series(0, %(workers)s - 1) AS n
CROSS JOIN (VALUES (0, NULL, 'spawning', 'spawn'),
                   (90, 'spawning', 'active', 'first heartbeat'),
                   (2400, 'active', 'draining', 'scale-down: surplus'),
                   (2405, 'draining', 'terminating', 'drained'),
                   (2410, 'terminating', 'terminated', 'pod gone')) AS s (offset_s, frm, too, reason);

-- A decision every 5 minutes; every other one spawns the worker of that 10-minute slot.
INSERT INTO scaling_decisions (at, cycle_number, leader_epoch, holder, inputs, spawn_count, drain_worker_ids,
                               spawned_worker_ids, reasons)
SELECT %(start)s + make_interval(secs => n * 300), n * 30, 1, 'scaler@bench',
       '{"queued": 3, "claimable": 2, "in_progress": 1, "capacity": 1, "desired": 2}'::jsonb,
       CASE WHEN n %% 2 = 0 THEN 1 ELSE 0 END,
       CASE WHEN n %% 2 = 1 AND n >= 9 THEN ARRAY['gpu-bench-w' || ((n - 9) / 2)] ELSE '{}' END,
       CASE WHEN n %% 2 = 0 THEN ARRAY['gpu-bench-w' || (n / 2)] ELSE '{}' END,
       ARRAY['scale_up: spawn 1 because desired 2; capacity 1']
FROM generate_series(0, %(workers)s * 2 - 1) AS n;

-- Tasks: eight per worker.
INSERT INTO tasks (id, task_type, status, user_id, worker_id, attempts, created_at, claimed_at, finished_at)
SELECT 't-' || n, 'travel_segment', 'Complete', 'user-' || (n %% 40), 'gpu-bench-w' || (n / 8), 1,
       %(start)s + make_interval(secs => (n / 8) * 600 + 100 + (n %% 8) * 250),
       %(start)s + make_interval(secs => (n / 8) * 600 + 110 + (n %% 8) * 250),
       %(start)s + make_interval(secs => (n / 8) * 600 + 330 + (n %% 8) * 250)
FROM generate_series(0, %(workers)s * 8 - 1) AS n;
ANALYZE;
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--worker-logs-per-minute", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per query; the median is shown")
    args = parser.parse_args()

    import pgserver
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from store.migrate import apply_migrations
    from store.postgres import PostgresStore

    with tempfile.TemporaryDirectory(prefix="explain-bench-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            url = server.get_uri()
            apply_migrations(url)
            with psycopg.connect(url, autocommit=True) as conn:  # the bench's raw SQL names our tables unqualified
                conn.execute(
                    "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = orchestrator, public', "
                    "current_database()); END $$"
                )
            now = datetime.now(UTC).replace(microsecond=0)
            start = now - timedelta(days=args.days)
            seconds = args.days * 86_400
            params = {
                "start": start,
                "cycles": int(seconds / 10),
                "worker_logs": int(args.days * 1440 * args.worker_logs_per_minute),
                "worker_log_step": 60.0 / args.worker_logs_per_minute,
                "workers": int(seconds / 600),
            }
            store = PostgresStore(url, min_size=1, max_size=2)
            began = time.perf_counter()
            with store.pool.connection() as conn:
                for statement in FILL_SQL.split(";\n"):
                    if statement.strip():
                        conn.execute(statement, params)
                counts = {
                    table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
                    for table in ("system_logs", "scaling_decisions", "workers", "worker_events", "tasks")
                }
            store.close()
            print(f"history: {args.days:g} days ending now, filled in {time.perf_counter() - began:.1f} s")
            for table, n in counts.items():
                print(f"  {table:<18} {n:>10,} rows")

            mid = start + timedelta(days=args.days / 2)
            worker = f"gpu-bench-w{params['workers'] // 2}"
            queries = {
                "--at <timestamp> (±5 min)": ["--at", mid.isoformat()],
                "--at HH:MM (bare time)": ["--at", (now - timedelta(hours=3)).strftime("%H:%M")],
                "--worker <id>": ["--worker", worker],
                "--since/--until (1 hour)": [
                    "--since",
                    mid.isoformat(),
                    "--until",
                    (mid + timedelta(hours=1)).isoformat(),
                ],
                "--since/--until (1 day)": [
                    "--since",
                    mid.isoformat(),
                    "--until",
                    (mid + timedelta(days=1)).isoformat(),
                ],
                "--since/--until (1 day) --json": [
                    "--since",
                    mid.isoformat(),
                    "--until",
                    (mid + timedelta(days=1)).isoformat(),
                    "--json",
                ],
            }
            runner = CliRunner()
            print(f"\n{'query':<34} {'median':>8} {'worst':>8}   (goal: < 2 s; {args.repeat} runs each)")
            worst_all = 0.0
            for label, argv in queries.items():
                times = []
                for _ in range(args.repeat):
                    began = time.perf_counter()
                    result = runner.invoke(
                        app, ["explain", *argv], env={"DATABASE_URL": url, "ORCHESTRATOR_DATABASE__BACKEND": "postgres"}
                    )
                    times.append(time.perf_counter() - began)
                    if result.exit_code != 0:
                        print(f"{label}: exit {result.exit_code}: {result.output.strip()}")
                        return 1
                worst_all = max(worst_all, max(times))
                print(f"{label:<34} {statistics.median(times):>7.3f}s {max(times):>7.3f}s")
            print(f"\nslowest single answer: {worst_all:.3f} s ({'within' if worst_all < 2 else 'OVER'} the 2 s goal)")
        finally:
            server.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
