"""`python -m worker --worker-id ID [--handler module:function | --handler type=module:function ...]`

What a pod runs. Needs only the database settings (DATABASE_URL with this worker's own role, or
SUPABASE_URL and SUPABASE_WORKER_TOKEN, its own JWT, with SUPABASE_ANON_KEY as `apikey`; a
SUPABASE_SERVICE_ROLE_KEY still works); everything else has a default. What that credential may do
is in the README's pod contract. Environment (the pod contract):

  WORKER_ID                 the worker id (= pod name); --worker-id wins
  HEARTBEAT_INTERVAL_S      seconds between heartbeats (default 10)
  WORKER_POLL_INTERVAL_S    wait between empty claims (default 1)
  WORKER_SHUTDOWN_GRACE_S   on SIGTERM, time the held task gets (default 30)
  WORKER_TASK_TYPES         comma-separated task types to claim (default: all it has handlers for)
  WORKER_CONCURRENCY        tasks run at once (default 1; the orchestrator sets scaling.tasks_per_worker)
  WORKER_HANDLER            handler specs, comma-separated, when no --handler is given
  WORKER_BOOT_DELAY_S       sleep before the first heartbeat (LocalProvider's simulated boot)
  WORKER_LOG_FALLBACK_FILE  JSON-lines file for logs the database refuses
  TRACEPARENT               the lifecycle trace; task spans join it
  OTEL_EXPORTER_OTLP_ENDPOINT / _PROTOCOL, OTEL_SERVICE_NAME   span export (optional)
  WORKER_FAULT_EXIT_AT_START, WORKER_FAULT_CRASH_AFTER_S, WORKER_FAULT_STOP_HEARTBEAT_AFTER_S
                            failure injection (LocalProvider tests and demos)

Exit codes: 0 drained or stopped by SIGTERM, 3 told to stop by its row (error/terminated) or no
row, 2 bad arguments or no database settings, 1 an unexpected error, 70 injected crash. A database
that cannot be reached is waited out (at start, and for every call after it), never an exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["main"]

CRASH_EXIT_CODE = 70
# A database that cannot be reached at start is an outage to wait out, never an exit: tries with
# exponential backoff and jitter, at most this far apart. (The orchestrator's spawn timeout, counted
# from the database's return, decides about a worker that never comes up.)
_OPEN_BACKOFF_BASE_S = 0.5
_OPEN_BACKOFF_CAP_S = 10.0


def _float(environ: Mapping[str, str], key: str, default: float | None) -> float | None:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    return float(raw)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m worker", description="The reference GPU worker.")
    parser.add_argument("--worker-id", default=environ.get("WORKER_ID"), help="worker id (default: $WORKER_ID)")
    parser.add_argument(
        "--handler",
        action="append",
        default=[],
        help="module:function (default handler) or type=module:function; repeatable",
    )
    parser.add_argument("--log-level", default=environ.get("WORKER_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.worker_id:
        parser.error("--worker-id (or WORKER_ID) is required")

    if environ.get("WORKER_FAULT_EXIT_AT_START"):
        print(f"worker {args.worker_id}: fault injection: exiting at start", file=sys.stderr, flush=True)
        return 1
    crash_after = _float(environ, "WORKER_FAULT_CRASH_AFTER_S", None)
    if crash_after is not None:
        timer = threading.Timer(crash_after, lambda: os._exit(CRASH_EXIT_CODE))
        timer.daemon = True
        timer.start()

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s worker[{args.worker_id}] %(name)s: %(message)s",
    )
    log = logging.getLogger("worker")

    from store.base import DatabaseUnavailable, StoreError
    from store.factory import open_store_from_env
    from telemetry import metrics
    from worker import tracing
    from worker.handlers import parse_handler_specs
    from worker.logs import StoreLogHandler
    from worker.runner import ExitCode, run_worker

    specs = list(args.handler) or [s for s in environ.get("WORKER_HANDLER", "").split(",") if s.strip()]
    if not specs:
        specs = ["worker.handlers:demo_handler"]
    try:
        handlers = parse_handler_specs(specs)
    except (ImportError, ValueError) as exc:
        log.error("bad --handler: %s", exc)
        return 2
    task_types = [t.strip() for t in environ.get("WORKER_TASK_TYPES", "").split(",") if t.strip()] or None
    try:
        concurrency = int(environ.get("WORKER_CONCURRENCY", "").strip() or 1)
    except ValueError:
        log.error("WORKER_CONCURRENCY must be a whole number, got %r", environ.get("WORKER_CONCURRENCY"))
        return 2
    if concurrency < 1:
        log.error("WORKER_CONCURRENCY must be at least 1, got %d", concurrency)
        return 2

    boot_delay = _float(environ, "WORKER_BOOT_DELAY_S", 0.0) or 0.0
    if boot_delay > 0:
        # Like a real pod whose container runs while the worker loads: alive, no heartbeat yet.
        log.info("booting for %.1fs", boot_delay)
        time.sleep(boot_delay)
    import random

    from fleet import supervision

    store = None
    outage: supervision.Outage | None = None
    while store is None:
        try:
            store = open_store_from_env(environ)
        except DatabaseUnavailable as exc:  # the database may be restarting: wait it out
            metrics.record_error("worker", "open_store")
            outage = supervision.after_outage_failure(
                outage,
                time.time(),
                str(exc),
                base_s=_OPEN_BACKOFF_BASE_S,
                cap_s=_OPEN_BACKOFF_CAP_S,
                jitter=random.random(),
            )
            log.warning("cannot reach the database: %s; %s, waiting", exc, outage.summary())
            time.sleep(supervision.outage_wait_s(outage, time.time(), default_s=_OPEN_BACKOFF_CAP_S))
        except StoreError as exc:
            log.error("cannot open the database: %s", exc)
            return 2
    if outage is not None:
        log.info("the database answers again after %.0fs", outage.seconds(time.time()))
    fallback = Path(
        environ.get("WORKER_LOG_FALLBACK_FILE") or f".orchestrator/logs/worker-{args.worker_id}.fallback.jsonl"
    )
    db_logs = StoreLogHandler(store, args.worker_id, fallback_file=fallback)
    logging.getLogger().addHandler(db_logs)
    tracing.setup_worker_tracing(args.worker_id)
    code: int = ExitCode.FATAL
    try:
        code = run_worker(
            store,
            args.worker_id,
            handlers,
            heartbeat_interval_s=_float(environ, "HEARTBEAT_INTERVAL_S", 10.0) or 10.0,
            poll_interval_s=_float(environ, "WORKER_POLL_INTERVAL_S", 1.0) or 1.0,
            shutdown_grace_s=_float(environ, "WORKER_SHUTDOWN_GRACE_S", 30.0) or 0.0,
            task_types=task_types,
            traceparent=environ.get("TRACEPARENT") or None,
            stop_heartbeat_after_s=_float(environ, "WORKER_FAULT_STOP_HEARTBEAT_AFTER_S", None),
            install_signal_handlers=True,
            concurrency=concurrency,
        )
    except Exception:
        log.exception("worker %s failed", args.worker_id)
        code = ExitCode.FATAL
    finally:
        tracing.shutdown_worker_tracing()
        logging.getLogger().removeHandler(db_logs)
        db_logs.close()
        store.close()
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
