"""The worker's log handler: batched, non-blocking `insert_system_logs`, with a JSON-lines fallback.

What the replaced system got wrong, and what this does instead:
- `emit` never blocks and never touches the database: it puts the record on a bounded queue. When
  the queue is full the record goes straight to the fallback file and is counted, never lost.
- One flusher thread sends batches. A batch the database refuses (or an outage) is written to the
  fallback file, counted, and reported on stderr once per outage, never swallowed. Rows the
  database rejects are written there too, with the reason.
- Secrets (the values of DATABASE_URL, SUPABASE_SERVICE_ROLE_KEY, RUNPOD_API_KEY in the pod's
  env, and anything that looks like a credential) are masked in every message and attribute, on
  their way to the database, the fallback file and stderr.
- Records emitted by the flusher thread itself (the store's own logging) are not shipped, so a
  failing database cannot feed a loop of log records about failing to log. For the same reason the
  handler's own failures are counted (`counters`, `orchestrator_errors`) and said on stderr, never
  logged.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import queue
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace

from store.base import LogRecord, Store
from telemetry import metrics
from telemetry import redact as redaction

__all__ = ["CURRENT_TASK_ID", "StoreLogHandler"]

# The task a log record belongs to, set by the runner around each task.
CURRENT_TASK_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("worker_task_id", default=None)

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class StoreLogHandler(logging.Handler):
    def __init__(
        self,
        store: Store,
        worker_id: str,
        *,
        fallback_file: Path,
        batch_size: int = 200,
        flush_interval_s: float = 0.5,
        max_queue: int = 10_000,
        level: int = logging.INFO,
    ) -> None:
        super().__init__(level)
        self._store = store
        self._worker_id = worker_id
        self._fallback_file = fallback_file
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._file_lock = threading.Lock()
        self._outage = False
        self.counters = {
            "shipped": 0,
            "duplicates": 0,
            "to_fallback": 0,
            "rejected": 0,
            "queue_full": 0,
            "emit_errors": 0,
        }
        redaction.register_secret_env(os.environ)
        self._thread = threading.Thread(target=self._run, name="worker-log-flusher", daemon=True)
        self._thread.start()

    # --- producer side -----------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._thread:
            return
        try:
            row = self._row(record)
        except Exception:  # counted; logging's handleError says it on stderr with the traceback
            self.counters["emit_errors"] += 1
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.counters["queue_full"] += 1
            self._to_fallback([row], reason="queue full")

    def _row(self, record: logging.LogRecord) -> dict[str, Any]:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        span_context = trace.get_current_span().get_span_context()
        attributes = {k: _jsonable(v) for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        attributes["thread"] = record.threadName
        return {
            "id": uuid.uuid4().hex,
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "source_type": "worker",
            "source_id": self._worker_id,
            "worker_id": self._worker_id,
            "task_id": CURRENT_TASK_ID.get(),
            "logger": record.name,
            "message": redaction.redact(message),
            "trace_id": format(span_context.trace_id, "032x") if span_context.is_valid else None,
            "attributes": redaction.redact_value(attributes),
        }

    # --- flusher side ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set() or not self._queue.empty():
            batch = self._take_batch()
            if batch:
                self._ship(batch)

    def _take_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        deadline = time.monotonic() + self._flush_interval_s
        while len(batch) < self._batch_size:
            timeout = deadline - time.monotonic()
            if timeout <= 0 or (self._stop.is_set() and self._queue.empty()):
                break
            try:
                batch.append(self._queue.get(timeout=min(timeout, 0.1)))
            except queue.Empty:
                continue
        return batch

    def _ship(self, batch: list[dict[str, Any]]) -> None:
        try:
            result = self._store.insert_system_logs([LogRecord.model_validate(row) for row in batch])
        except Exception as exc:  # the batch goes to the fallback file; stderr says so once per outage
            metrics.record_error("worker_logs", "insert")
            if not self._outage:
                self._outage = True
                print(
                    f"worker {self._worker_id}: cannot write logs to the database "
                    f"({type(exc).__name__}: {redaction.redact(str(exc))}); "
                    f"writing them to {self._fallback_file} until it recovers",
                    file=sys.stderr,
                    flush=True,
                )
            self._to_fallback(batch, reason=f"database unavailable: {type(exc).__name__}")
            time.sleep(min(1.0, self._flush_interval_s))
            return
        if self._outage:
            self._outage = False
            print(f"worker {self._worker_id}: log shipping to the database recovered", file=sys.stderr, flush=True)
        self.counters["shipped"] += result.inserted
        self.counters["duplicates"] += result.duplicates
        if result.rejected:
            self.counters["rejected"] += len(result.rejected)
            for rejected in result.rejected:
                self._to_fallback([batch[rejected.index]], reason=f"rejected: {rejected.reason}")

    def _to_fallback(self, rows: list[dict[str, Any]], *, reason: str) -> None:
        self.counters["to_fallback"] += len(rows)
        try:
            with self._file_lock:
                self._fallback_file.parent.mkdir(parents=True, exist_ok=True)
                with open(self._fallback_file, "a", encoding="utf-8") as out:
                    for row in rows:
                        out.write(json.dumps({**row, "fallback_reason": reason}) + "\n")
        except OSError as exc:  # the last resort is stderr
            metrics.record_error("worker_logs", "fallback_file")
            print(f"worker {self._worker_id}: fallback log file failed ({exc}); {len(rows)} records:", file=sys.stderr)
            for row in rows:
                print(json.dumps(row), file=sys.stderr)

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until the queue is empty."""
        deadline = time.monotonic() + timeout_s
        while not self._queue.empty() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.02)

    def close(self, timeout_s: float = 5.0) -> None:
        """Ship what is queued (bounded by timeout_s), then anything left goes to the fallback file."""
        self._stop.set()
        self._thread.join(timeout_s)
        leftovers: list[dict[str, Any]] = []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if leftovers:
            self._to_fallback(leftovers, reason="shutdown before shipping")
        super().close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)
