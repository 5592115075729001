"""LogShipper: the one process that moves every log record of the fleet into `system_logs`.

A plain class (made a Ray actor in actors/remote.py). `ship`/`ship_packed` append the batch to the
local spool (fsync'd) and only then answer, so an acknowledged record survives a SIGKILL. A
flusher thread reads the spool in order and calls `store.insert_system_logs`; while the database
is unreachable it backs off exponentially with jitter and writes the waiting records to the fallback
(stdout and a JSON-lines file) once each. Rows the database rejects go to the dead-letter file
with the reason and are counted as rejected, never as shipped. A poison batch (the store raises a
non-transient error) is bisected until the bad row is isolated and dead-lettered. After a restart
the spool is replayed; `LogRecord.id` makes replays idempotent.

`health()` runs in its own concurrency group, so it answers while a flush hangs; its figures feed
`telemetry.shipper_health.assess`, which decides whether the Scaler restarts this actor.

Its own failures are counted (`health()`, and `orchestrator_errors` with component `log_shipper`)
and written to the fallback with the reason, never logged: this process is where logs go.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from config.settings import OrchestratorSettings
from store import factory as stores
from store.base import DatabaseUnavailable, LogRecord, Store, StoreError
from telemetry import metrics
from telemetry import redact as redaction
from telemetry.fallback import FallbackWriter
from telemetry.log_handler import pack_records
from telemetry.spool import Cursor, Spool, SpoolFull, count_records

__all__ = ["LogShipper"]

_BACKOFF_BASE_S = 0.2
_BACKOFF_CAP_S = 10.0
_METRICS_EVERY_S = 1.0
_FALLBACK_EVERY_S = 0.5  # while the database is down, newly spooled records reach the fallback this often
_FALLBACK_ROUNDS = 20  # most batches echoed to the fallback per round


_ROW_FIELDS = frozenset(LogRecord.model_fields)


def _to_row(raw: Any) -> dict[str, Any]:
    """A spooled record as the JSON-ready dict `insert_system_logs` takes (`at` as ISO 8601 UTC)."""
    if not isinstance(raw, dict):
        raise ValueError(f"record is a {type(raw).__name__}, not a map")
    row = dict(raw) if raw.keys() <= _ROW_FIELDS else {k: v for k, v in raw.items() if k in _ROW_FIELDS}
    at = row.get("at")
    if isinstance(at, int | float):
        row["at"] = datetime.fromtimestamp(at, UTC).isoformat()
    return row


class LogShipper:
    def __init__(self, settings: OrchestratorSettings, *, store: Store | None = None) -> None:
        """`store` is injected by tests; otherwise `store.factory.open_store(settings)` is opened lazily."""
        redaction.register_secrets(settings)
        self._settings = settings
        shipping = settings.log_shipping
        self._batch_size = shipping.batch_size
        self._flush_interval = shipping.flush_interval_s
        self._store = store
        self._started_at = time.time()
        self._fallback = FallbackWriter(shipping.fallback_file, stream=sys.stdout)
        self._dead_letter = FallbackWriter(shipping.dead_letter_file, echo=False, reason_key="dead_letter_reason")
        self._counter_lock = threading.Lock()
        self._dropped: dict[str, int] = {}
        self._spool = Spool(shipping.spool_dir, max_bytes=shipping.max_spool_bytes, on_drop=self._count_drop)
        self._shipped = 0
        self._duplicates = 0
        self._rejected = 0
        self._spooled = 0
        self._refused = 0
        self._fallback_records = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None
        self._last_flush_at: float | None = None
        self._last_attempt_at: float | None = None
        self._flushing_since: float | None = None
        self._fallback_pos: Cursor | None = None  # spool cursor up to which waiting records are in the fallback
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flushed = threading.Condition()
        self._last_metrics = 0.0
        self._metrics_state: dict[str, float] = {}
        if self._spool.replayed_records:
            self._fallback.alarm(
                f"LogShipper started with {self._spool.replayed_records} records in the spool; replaying them",
                source_id="log-shipper",
            )
        self._flusher = threading.Thread(target=self._flush_loop, name="log-flusher", daemon=True)
        self._flusher.start()

    # --- producers ----------------------------------------------------------------------------
    def ship(self, records: list[dict[str, Any]]) -> int:
        """Spool a batch of record dicts durably; returns how many were accepted (acknowledged)."""
        return self.ship_packed(pack_records(list(records)))

    def ship_packed(self, payload: bytes) -> int:
        """Spool a msgpack array of record maps (what the log handler sends); returns the count."""
        try:
            count = count_records(payload)
        except ValueError as exc:
            self._count_drop("invalid_payload", 1)
            raise ValueError(f"LogShipper refused a batch: {exc}") from None
        if count == 0:
            return 0
        try:
            self._spool.append(payload, count)
        except SpoolFull:
            with self._counter_lock:
                self._refused += count
            raise
        with self._counter_lock:
            self._spooled += count
        if self._spool.pending_records() >= self._batch_size:
            self._wake.set()
        return count

    # --- health -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Figures for the Scaler's probe (see telemetry.shipper_health). Never touches the database."""
        with self._counter_lock:
            dropped = dict(self._dropped)
            figures = {
                "shipped": self._shipped,
                "duplicates": self._duplicates,
                "rejected": self._rejected,
                "spooled": self._spooled,
                "refused": self._refused,
                "fallback_records": self._fallback_records,
            }
        return {
            "pid": os.getpid(),
            "started_at": self._started_at,
            "now": time.time(),
            "last_flush_at": self._last_flush_at,
            "last_attempt_at": self._last_attempt_at,
            "flushing_since": self._flushing_since,
            "records_pending": self._spool.pending_records(),
            "pending_since": self._spool.pending_since,
            "spool_bytes": self._spool.total_bytes(),
            "replayed": self._spool.replayed_records,
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "consecutive_failures": self._consecutive_failures,
            "last_error": self._last_error,
            "flusher_alive": self._flusher.is_alive(),
            **figures,
        }

    def flush_now(self, timeout: float = 10.0) -> dict[str, Any]:
        """Wake the flusher and wait (bounded) until the spool is empty; returns health()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._spool.pending_records() > 0:
            self._wake.set()
            with self._flushed:
                self._flushed.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        return self.health()

    def getpid(self) -> int:
        return os.getpid()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        self._flusher.join(timeout=5)
        self._spool.close()

    # --- flusher ------------------------------------------------------------------------------
    def _count_drop(self, reason: str, n: int) -> None:
        with self._counter_lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + n
        self._fallback.alarm(f"LogShipper dropped {n} records: {reason}", source_id="log-shipper")

    def _open_store(self) -> Store:
        if self._store is None:
            self._store = stores.open_store(self._settings)
        return self._store

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            try:
                flushed_any = self._flush_once()
            except Exception as exc:  # never die: say it, count it, back off, go on
                flushed_any = False
                self._note_failure(exc)
                self._backoff()
            self._publish_metrics()
            if not flushed_any:
                self._wake.wait(self._flush_interval)
                self._wake.clear()

    def _flush_once(self) -> bool:
        records, cursor = self._spool.read_batch(self._batch_size)
        if not records:
            return False
        self._last_attempt_at = time.time()
        self._flushing_since = time.time()
        try:
            store = self._open_store()
            inserted, duplicates, rejected = self._insert(store, records)
        except Exception as exc:
            self._flushing_since = None
            self._note_failure(exc)
            self._backoff(type(exc).__name__)
            return False
        self._flushing_since = None
        self._spool.commit(cursor)
        now = time.time()
        with self._counter_lock:
            self._shipped += inserted
            self._duplicates += duplicates
            self._rejected += rejected
        if self._consecutive_failures:
            self._fallback.alarm(
                f"database reachable again after {self._consecutive_failures} failed flushes; spool draining",
                source_id="log-shipper",
            )
        self._consecutive_failures = 0
        self._last_flush_at = now
        with self._flushed:
            self._flushed.notify_all()
        return True

    def _insert(self, store: Store, raws: list[Any]) -> tuple[int, int, int]:
        """Insert a batch; returns (inserted, duplicates, rejected). Transient errors propagate."""
        rows: list[dict[str, Any]] = []
        raw_rows: list[Any] = []
        rejected = 0
        for raw in raws:
            try:
                rows.append(_to_row(raw))
                raw_rows.append(raw)
            except (ValueError, TypeError, OverflowError, OSError) as exc:
                rejected += self._dead(raw, f"invalid record: {str(exc).splitlines()[0][:300]}")
        if not rows:
            return 0, 0, rejected
        inserted, duplicates, more = self._insert_rows(store, rows, raw_rows)
        return inserted, duplicates, rejected + more

    def _insert_rows(self, store: Store, rows: list[dict[str, Any]], raws: list[Any]) -> tuple[int, int, int]:
        try:
            if hasattr(store, "insert_system_log_dicts"):
                # JSON-ready dicts straight from the spool: the database validates each row.
                result = store.insert_system_log_dicts(rows)
            else:
                result = store.insert_system_logs([LogRecord.model_validate(row) for row in rows])
        except DatabaseUnavailable:
            raise
        except (StoreError, ValidationError) as exc:
            # Not transient: a row the database cannot take poisons the batch. Bisect to find it.
            if len(rows) == 1:
                return 0, 0, self._dead(raws[0], f"store error: {str(exc)[:300]}")
            mid = len(rows) // 2
            a = self._insert_rows(store, rows[:mid], raws[:mid])
            b = self._insert_rows(store, rows[mid:], raws[mid:])
            return a[0] + b[0], a[1] + b[1], a[2] + b[2]
        rejected = 0
        for item in result.rejected:
            raw = raws[item.index] if 0 <= item.index < len(raws) else {"id": item.id}
            rejected += self._dead(raw, item.reason)
        return result.inserted, result.duplicates, rejected

    def _dead(self, raw: Any, reason: str) -> int:
        record = raw if isinstance(raw, dict) else {"message": repr(raw)[:2000]}
        self._dead_letter.write([record], note=reason)
        return 1

    def _note_failure(self, exc: BaseException) -> None:
        """A failed flush: counted, and said on the fallback (the 1st, 10th and every 100th in a row)."""
        metrics.record_error("log_shipper", "flush")
        self._consecutive_failures += 1
        self._last_error = redaction.redact(f"{type(exc).__name__}: {str(exc)[:500]}")
        if self._consecutive_failures in (1, 10) or self._consecutive_failures % 100 == 0:
            self._fallback.alarm(
                f"flush to the database failed ({self._consecutive_failures} in a row): {self._last_error}",
                source_id="log-shipper",
            )

    def _echo_waiting_to_fallback(self, exc_name: str) -> None:
        """While the database is unreachable, each waiting record appears in the fallback once."""
        for _ in range(_FALLBACK_ROUNDS):
            records, cursor = self._spool.read_batch(self._batch_size, start=self._fallback_pos)
            if not records or (self._fallback_pos is not None and cursor == self._fallback_pos):
                return
            written = self._fallback.write(
                [r for r in records if isinstance(r, dict)], note=f"database unreachable ({exc_name}); spooled"
            )
            with self._counter_lock:
                self._fallback_records += written
            self._fallback_pos = cursor

    def _backoff(self, exc_name: str = "error") -> None:
        """Exponential backoff with jitter; the fallback keeps following the spool meanwhile."""
        n = self._consecutive_failures
        delay = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * (2 ** min(n, 16))) * random.uniform(0.5, 1.0)
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            try:
                self._echo_waiting_to_fallback(exc_name)
            except Exception as exc:  # the records stay spooled; only their echo is late
                self._own_failure("echo_to_fallback", exc)
            self._publish_metrics()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, _FALLBACK_EVERY_S))

    def _publish_metrics(self) -> None:
        now = time.monotonic()
        if now - self._last_metrics < _METRICS_EVERY_S:
            return
        self._last_metrics = now
        try:
            metrics.record_log_shipper_stats(self.health(), self._metrics_state)
        except Exception as exc:  # metrics never raise; health() reads the spool
            self._own_failure("publish_metrics", exc)

    def _own_failure(self, reason: str, exc: Exception) -> None:
        """Count a failure of this actor's own machinery and say it on the fallback (never through logging)."""
        metrics.record_error("log_shipper", reason)
        self._fallback.alarm(f"LogShipper {reason} failed: {type(exc).__name__}: {exc}", source_id="log-shipper")
