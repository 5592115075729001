"""Log throughput: several actors log into Postgres through the LogShipper; the replaced design as a baseline.

    .venv/bin/python bench/log_throughput.py [--producers 4] [--rate 24000] [--seconds 10]

Both runs offer the same paced load (`--rate` records a second in all, split over `--producers`
Ray actors, for `--seconds`) against the same embedded Postgres (or DATABASE_URL):

- ours: the ShippingLogHandler in each producer -> LogShipper actor (fsync'd spool) -> batched
  `insert_system_logs`;
- baseline, the replaced system's design: in each producer a bounded queue of 2,000 records, a
  thread sending batches of 50 with one insert RPC per batch, dropping records when the queue is full.

Printed per run: records offered, landed in `system_logs`, dropped, landed per second (until the
last record landed), and the caller's cost per logging call (p50, p99, measured around
`logger.info` in the producers). Targets: >= 20,000 records/s, p99 < 20 µs.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import ray  # noqa: E402

from config.settings import OrchestratorSettings  # noqa: E402

BASELINE_QUEUE = 2_000
BASELINE_BATCH = 50


class BaselineHandler(logging.Handler):
    """The replaced design: bounded queue of 2,000, batches of 50, one insert RPC per batch, drop when full."""

    def __init__(self, settings: OrchestratorSettings, source_id: str) -> None:
        super().__init__()
        from store.factory import open_store

        self.store = open_store(settings)
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=BASELINE_QUEUE)
        self.dropped = 0
        self.source_id = source_id
        self.prefix = uuid.uuid4().hex[:12]
        self.n = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1
        item = {
            "id": f"{self.prefix}-{self.n}",
            "at": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "source_type": "orchestrator",
            "source_id": self.source_id,
        }
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def run(self) -> None:
        from datetime import UTC, datetime

        from store.base import LogRecord

        while not (self.stop and self.queue.empty()):
            batch = []
            try:
                batch.append(self.queue.get(timeout=0.1))
                while len(batch) < BASELINE_BATCH:
                    batch.append(self.queue.get_nowait())
            except queue.Empty:
                pass
            if batch:
                rows = [LogRecord(**{**r, "at": datetime.fromtimestamp(r["at"], UTC)}) for r in batch]
                try:
                    self.store.insert_system_logs(rows)
                except Exception:
                    self.dropped += len(batch)  # the old handler dropped failed batches


@ray.remote(num_cpus=0)
class Producer:
    def __init__(self, settings: OrchestratorSettings, name: str, mode: str) -> None:
        self.logger = logging.getLogger(f"bench.{name}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        if mode == "ours":
            from telemetry.log_handler import ShippingLogHandler

            self.handler: Any = ShippingLogHandler(settings, source_type="orchestrator", source_id=name)
        else:
            self.handler = BaselineHandler(settings, name)
        self.logger.addHandler(self.handler)
        self.name = name

    def run(self, rate: float, seconds: float) -> dict[str, Any]:
        costs = []
        perf = time.perf_counter_ns
        log = self.logger
        start = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            due = min(int(elapsed * rate) + 1, int(seconds * rate))
            while sent < due:
                t0 = perf()
                log.info("cycle %d: 0 spawned, 0 terminated (worker %s)", sent, self.name)
                costs.append(perf() - t0)
                sent += 1
            time.sleep(0.002)
        return {"sent": sent, "costs": costs}

    def finish(self, timeout: float) -> dict[str, Any]:
        if isinstance(self.handler, BaselineHandler):
            self.handler.stop = True
            self.handler.thread.join(timeout)
            return {"dropped": self.handler.dropped}
        self.handler.flush(timeout=timeout)
        stats = self.handler.stats()
        return {"dropped": sum(stats["dropped"].values()), "fallback": stats["fallback"], "acked": stats["acked"]}


def count_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM system_logs").fetchone()
        return int(row[0]) if row else 0


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE system_logs")


def run_once(mode: str, settings: OrchestratorSettings, url: str, producers: int, rate: float, seconds: float) -> dict:
    reset(url)
    shipper = None
    if mode == "ours":
        from actors import remote

        shipper = remote.get_or_create_log_shipper(settings)
        ray.get(shipper.getpid.remote())
    actors = [Producer.remote(settings, f"{mode}-{i}", mode) for i in range(producers)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    start = time.monotonic()
    results = ray.get([a.run.remote(rate / producers, seconds) for a in actors])
    offered = sum(r["sent"] for r in results)
    finals = ray.get([a.finish.remote(120.0) for a in actors])
    dropped = sum(f["dropped"] for f in finals) + sum(f.get("fallback", 0) for f in finals)
    expected = offered - dropped
    landed = count_rows(url)
    deadline = time.monotonic() + 180
    while landed < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        landed = count_rows(url)
    elapsed = time.monotonic() - start
    costs = sorted(c for r in results for c in r["costs"])
    for a in actors:
        ray.kill(a)
    if shipper is not None:
        health = ray.get(shipper.health.remote())
        ray.kill(shipper, no_restart=True)
        dropped += health["dropped_total"]
    return {
        "mode": mode,
        "offered": offered,
        "landed": landed,
        "dropped": dropped,
        "elapsed": elapsed,
        "per_s": landed / elapsed,
        "p50_us": costs[len(costs) // 2] / 1000 if costs else 0.0,
        "p99_us": costs[int(len(costs) * 0.99)] / 1000 if costs else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=24_000, help="records per second offered in all")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=2_000, help="LogShipper records per insert")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="log-bench-"))
    server = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        import pgserver

        server = pgserver.get_server(tmp / "pgdata", cleanup_mode="stop")
        url = server.get_uri()
    from store.migrate import apply_migrations

    apply_migrations(url)
    settings = OrchestratorSettings(
        database={"url": url, "pool_max_size": 2},
        log_shipping={
            "spool_dir": tmp / "spool",
            "fallback_file": tmp / "fallback.jsonl",
            "dead_letter_file": tmp / "dead-letter.jsonl",
            "batch_size": args.batch_size,
            "flush_interval_s": 0.1,
        },
    )
    ray.init(num_cpus=2, include_dashboard=False, namespace="gpu-orchestrator", log_to_driver=False)
    try:
        print(f"{args.producers} producer actors, {args.rate:,.0f} records/s offered for {args.seconds:g}s", flush=True)
        rows = []
        for mode in ("ours", "baseline"):
            row = run_once(mode, settings, url, args.producers, args.rate, args.seconds)
            rows.append(row)
            print(
                f"{mode:>8}: offered {row['offered']:>8,}  landed {row['landed']:>8,}  dropped {row['dropped']:>7,}  "
                f"{row['per_s']:>9,.0f} records/s into Postgres  "
                f"per call p50 {row['p50_us']:.1f} µs  p99 {row['p99_us']:.1f} µs",
                flush=True,
            )
        ours, base = rows
        print(
            f"ratio ours/baseline: {ours['per_s'] / max(base['per_s'], 1e-9):.2f}x records/s landed; "
            f"dropped {ours['dropped']:,} vs {base['dropped']:,}"
        )
        print(
            f"targets: >= 20,000 records/s: {'met' if ours['per_s'] >= 20_000 else 'NOT met'}; "
            f"p99 < 20 µs: {'met' if ours['p99_us'] < 20 else 'NOT met'}"
        )
    finally:
        ray.shutdown()
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
