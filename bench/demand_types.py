"""demand_snapshot with and without `p_task_types`, against its version before the argument existed.

A throwaway embedded Postgres, 100,000 Queued tasks from 1,000 users (a quarter of another type,
one in ten waiting for another task); each variant timed 20 times, fresh and after VACUUM.
Prints p50 per variant and its answer, so "same answer, same time with no types" is visible.

    .venv/bin/python bench/demand_types.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet_bench import postgres

ROOT = Path(__file__).resolve().parents[1]
TASKS_FILE = "store/migrations/native/0020_tasks.sql"


def _old_function() -> str:
    """demand_snapshot as committed before p_task_types, renamed (git show of that commit)."""
    sql = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"3daf5ad:{TASKS_FILE}"], capture_output=True, text=True, check=True
    ).stdout
    start, end = sql.index("FUNCTION demand_snapshot"), sql.index("CREATE OR REPLACE FUNCTION get_task")
    body = "CREATE OR REPLACE " + sql[start:end]
    return body.replace("FUNCTION demand_snapshot(", "FUNCTION bench_demand_before_types(")


def main() -> None:
    with postgres() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_old_function())
        conn.execute(
            """INSERT INTO tasks (id, task_type, user_id, depends_on)
               SELECT 't' || g, CASE WHEN g % 4 = 0 THEN 'cpu_only' ELSE 'gpu' END, 'u' || (g % 1000),
                      CASE WHEN g % 10 = 0 THEN 't' || (g - 1) END
               FROM generate_series(1, 100000) g"""
        )
        variants = (
            ("before p_task_types", "SELECT bench_demand_before_types(3)"),
            ("now, no types", "SELECT demand_snapshot(3)"),
            ("now, types [gpu]", "SELECT demand_snapshot(3, ARRAY['gpu'])"),
        )
        for when in ("fresh", "after VACUUM"):
            if when != "fresh":
                conn.execute("VACUUM ANALYZE tasks")
            for label, query in variants:
                values = []
                answer: dict[str, Any] = {}
                for _ in range(20):
                    t0 = time.perf_counter()
                    row = conn.execute(query).fetchone()
                    values.append(time.perf_counter() - t0)
                    answer = row[0] if row else {}
                shown = {k: v for k, v in answer.items() if k != "taken_at"}
                print(f"{when:13s} {label:20s} p50 {1000 * statistics.median(values):6.1f} ms  {shown}")


if __name__ == "__main__":
    main()
