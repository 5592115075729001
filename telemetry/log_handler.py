"""The logging handler every orchestrator process installs: records go to the LogShipper, never lost silently.

`emit` runs on the caller's thread and only builds a dict and appends it to a bounded in-process
buffer: no I/O, no lock shared with the network, no exception ever escapes. A sender thread drains
the buffer every `_POLL_S` while it holds records or batches in flight (an idle one sleeps until a record
arrives, or `_IDLE_WAIT_S`), redacts secrets, packs each batch with msgpack and sends it with a
fire-and-forget `.remote()` to the LogShipper. A record counts as acknowledged only when the
shipper's answer arrives (the ObjectRefs are kept and checked lazily); a batch whose call fails is
resent (records carry unique ids, so a resend never duplicates a row) and, after
`_MAX_SEND_ATTEMPTS`, written to the local fallback and counted. With no Ray or no LogShipper the
records go to the fallback (stderr and a JSON-lines file) and are counted. How to find the LogShipper
is the caller's to say (`shipper_lookup`; the actors layer gives `actors._telemetry.log_shipper_lookup`):
telemetry knows no actor names.

The handler never logs its own failures (it would feed itself): each is counted in `stats()` and in
`orchestrator_errors{component="log_handler"}` (from the sender thread, never from `emit`) and
written to the fallback's stream and file with its reason.

When the buffer is full the incoming DEBUG record is dropped, or else the oldest record; every
drop is counted by reason and level in `stats()` and summarised in the fallback.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]
from opentelemetry import trace

from config.settings import OrchestratorSettings
from telemetry import metrics
from telemetry import redact as redaction
from telemetry.fallback import FallbackWriter

__all__ = [
    "ShippingLogHandler",
    "install_log_handler",
    "pack_records",
]

_POLL_S = 0.05  # how often the sender thread drains the buffer while it holds records or waits for acks
# With nothing buffered or in flight the sender sleeps until `emit` wakes it (the buffer's first record)
# or this long: a hundred idle lifecycles polling every 50 ms were 2,000 wake-ups a second on the head.
_IDLE_WAIT_S = 1.0
_MAX_SEND_ATTEMPTS = 5  # sends of one batch before it goes to the fallback
_LOOKUP_RETRY_S = 2.0  # how long to wait before looking the LogShipper up again after a miss
_MAX_INFLIGHT_BATCHES = 64  # unacknowledged batches in flight; past it the buffer holds records

# Attributes every logging.LogRecord has; anything else on a record came from `extra=`. Importing Ray
# installs a record factory that adds `_ray_timestamp_ns`: named here, so a process that imports Ray
# after this module does not ship it as an attribute of every record.
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "_ray_timestamp_ns",
}
# A record whose __dict__ has no more keys than a fresh LogRecord's carries no `extra=` fields (LogRecord
# sets every standard attribute in __init__), so the set difference below is skipped for most records.
_PLAIN_RECORD_LEN = len(logging.makeLogRecord({}).__dict__)
# `extra=` fields that become columns of `system_logs` rather than attributes.
_CONTEXT_FIELDS = ("cycle_number", "worker_id", "task_id")


def pack_records(records: list[dict[str, Any]]) -> bytes:
    """The wire and spool form of a batch: a msgpack array of record maps."""
    return bytes(msgpack.packb(records, use_bin_type=True, default=str))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


@dataclass
class _Inflight:
    ref: Any
    records: list[dict[str, Any]]
    payload: bytes
    sent_at: float
    attempts: int = 1


@dataclass
class _Counters:
    emitted: int = 0
    sent: int = 0
    acked: int = 0
    resent_batches: int = 0
    fallback: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    send_errors: int = 0
    last_error: str | None = None
    handler_errors: int = 0  # emit() failed: the record is lost
    sender_rounds: int = 0  # times the sender thread woke up
    last_emit_error: str | None = None


class ShippingLogHandler(logging.Handler):
    """See the module docstring. Use `install_log_handler` rather than creating one directly."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        *,
        source_type: str,
        source_id: str,
        shipper_lookup: Callable[[], Any],
        keep_acked_ids: bool = False,
    ) -> None:
        """`shipper_lookup()` returns the LogShipper's handle, or None while there is none."""
        super().__init__(level=settings.log_shipping.level)
        # Tests compare what was acknowledged with what reached the database.
        self.acked_ids: list[str] | None = [] if keep_acked_ids else None
        shipping = settings.log_shipping
        self.source_type = source_type
        self.source_id = source_id
        self._batch_size = min(shipping.batch_size, 2_000)
        self._flush_interval = shipping.flush_interval_s
        self._force = False  # set by flush(): send a partial batch now
        self._max_buffer = shipping.max_buffer_records
        self._buffer: deque[dict[str, Any]] = deque()
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:16]  # unique per process: ids never collide across restarts
        self._counters = _Counters()
        self._drop_lock = threading.Lock()
        self._unreported_drops = 0
        self._reported_handler_errors = 0  # handler_errors already reported by the sender thread
        self._inflight: list[_Inflight] = []
        self._lookup = shipper_lookup
        self._shipper: Any = None
        self._next_lookup = 0.0
        self._fallback = FallbackWriter(shipping.fallback_file)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._sender_ident: int | None = None
        self._pumping = False  # set before the sender pops records, cleared once they are in flight
        self._sender = threading.Thread(target=self._run, name="log-sender", daemon=True)
        self._sender.start()

    # --- caller side: never blocks, never raises ---------------------------------------------
    def handle(self, record: logging.LogRecord) -> bool:
        """`logging.Handler.handle` without its Python-level filter/acquire/release calls (~1 µs a record).

        Same semantics: filters are applied when there are any, and emit runs under the handler's
        lock (an RLock), which serialises callers so the buffer bound and the counters stay exact.
        """
        if self.filters and not self.filter(record):
            return False
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if threading.get_ident() == self._sender_ident:
                return  # a log line from our own machinery must not feed itself
            d = record.__dict__
            try:
                message = record.getMessage()
            except Exception:  # the caller's format string is wrong: the record shows the bad call itself
                message = f"{record.msg!r} % {record.args!r}"
            if record.exc_info:
                if not record.exc_text:
                    record.exc_text = "".join(traceback.format_exception(*record.exc_info))
                message = f"{message}\n{record.exc_text}"
            item: dict[str, Any] = {
                "id": f"{self._id_prefix}-{next(self._ids)}",
                "at": record.created,
                "level": record.levelname,
                "logger": record.name,
                "message": message,
                "source_type": self.source_type,
                "source_id": self.source_id,
            }
            extras = d.keys() - _STANDARD_ATTRS if len(d) > _PLAIN_RECORD_LEN else None
            if extras:
                attributes = {}
                for key in extras:
                    if key in _CONTEXT_FIELDS:
                        item[key] = d[key]
                    else:
                        attributes[key] = d[key]
                if attributes:
                    item["attributes"] = attributes
            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                item["trace_id"] = format(span_context.trace_id, "032x")
            buffer = self._buffer
            if len(buffer) >= self._max_buffer:
                self._drop_for(item)
                return
            buffer.append(item)
            self._counters.emitted += 1
            if len(buffer) == 1:  # the sender may be asleep with nothing to do: this one is for it
                self._wake.set()
        except Exception as exc:  # never raise into the caller; the sender thread reports it
            self._counters.handler_errors += 1
            self._counters.last_emit_error = f"emit: {type(exc).__name__}: {exc}"

    def _drop_for(self, item: dict[str, Any]) -> None:
        """The buffer is full: drop the incoming DEBUG record, else the oldest record; count it."""
        with self._drop_lock:
            self._counters.emitted += 1
            if item["level"] == "DEBUG":
                victim = item
            else:
                try:
                    victim = self._buffer.popleft()
                except IndexError:
                    victim = item
                else:
                    self._buffer.append(item)
            key = f"buffer_full:{victim['level']}"
            self._counters.dropped[key] = self._counters.dropped.get(key, 0) + 1
            self._unreported_drops += 1

    # --- sender thread ----------------------------------------------------------------------
    def _run(self) -> None:
        self._sender_ident = threading.get_ident()
        wait_s = _POLL_S
        while not self._stop.is_set():
            self._wake.wait(wait_s)
            self._wake.clear()
            self._counters.sender_rounds += 1
            self._pumping = True
            try:
                self._pump()
            except Exception as exc:  # the sender must outlive any bug: count it, say it, go on
                self._failed("sender", exc)
            finally:
                self._pumping = False
            if not self._buffer and not self._inflight:
                self._idle.set()
                wait_s = _IDLE_WAIT_S
            else:
                self._idle.clear()
                wait_s = _POLL_S
        try:
            self._pump()  # what the last round left, on close
        except Exception as exc:
            self._failed("sender_final", exc)

    def _failed(self, reason: str, exc: Exception) -> None:
        """Count a failure of the handler's own machinery and say it on the fallback (never through logging)."""
        self._counters.send_errors += 1
        self._counters.last_error = f"{type(exc).__name__}: {exc}"
        metrics.record_error("log_handler", reason)
        self._fallback.alarm(f"log sender error: {self._counters.last_error}", source_id=self.source_id)

    def _pump(self) -> None:
        self._check_acks()
        self._report_drops()
        self._report_emit_errors()
        buffer = self._buffer
        if not buffer:
            return
        # Send full batches at once, a partial one only when its oldest record waited flush_interval_s
        # (or on flush()): fewer, larger calls keep this thread's share of the GIL, and so the callers'
        # tail latency, small.
        try:
            oldest = buffer[0]["at"]
        except IndexError:
            return
        if len(buffer) < self._batch_size and not self._force and time.time() - oldest < self._flush_interval:
            return
        self._force = False
        while self._buffer and len(self._inflight) < _MAX_INFLIGHT_BATCHES:
            batch = []
            buffer = self._buffer
            for _ in range(min(self._batch_size, len(buffer))):
                try:
                    batch.append(buffer.popleft())
                except IndexError:
                    break
            if not batch:
                break
            for item in batch:
                message = redaction.redact(item["message"])
                # Postgres text cannot hold NUL; keep the line readable instead of losing it.
                item["message"] = message.replace("\x00", "\\x00") if "\x00" in message else message
                if "attributes" in item:
                    item["attributes"] = redaction.redact_value(_jsonable(item["attributes"]))
            self._send(batch)

    def _get_shipper(self) -> Any:
        if self._shipper is None and time.monotonic() >= self._next_lookup:
            try:
                self._shipper = self._lookup()
            except Exception as exc:
                error = f"LogShipper lookup: {type(exc).__name__}: {exc}"
                metrics.record_error("log_handler", "shipper_lookup")
                if error != self._counters.last_error:  # once per distinct failure, not every retry
                    self._fallback.alarm(f"log handler: {error}", source_id=self.source_id)
                self._counters.last_error = error
                self._shipper = None
            if self._shipper is None:
                self._next_lookup = time.monotonic() + _LOOKUP_RETRY_S
        return self._shipper

    def _send(self, batch: list[dict[str, Any]], payload: bytes | None = None, attempts: int = 1) -> None:
        if payload is None:
            payload = pack_records(batch)
        shipper = self._get_shipper()
        if shipper is None:
            self._to_fallback(batch, "LogShipper not reachable")
            return
        try:
            ref = shipper.ship_packed.remote(payload)
        except Exception as exc:  # the batch goes to the fallback with the reason
            self._counters.last_error = f"{type(exc).__name__}: {exc}"
            metrics.record_error("log_handler", "send")
            self._shipper = None
            self._to_fallback(batch, f"send failed: {type(exc).__name__}")
            return
        self._counters.sent += len(batch) if attempts == 1 else 0
        self._inflight.append(_Inflight(ref, batch, payload, time.monotonic(), attempts))

    def _check_acks(self) -> None:
        if not self._inflight:
            return
        import ray

        refs = [f.ref for f in self._inflight]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)
        if not ready:
            return
        ready_set = set(ready)
        still: list[_Inflight] = []
        retry: list[_Inflight] = []
        for flight in self._inflight:
            if flight.ref not in ready_set:
                still.append(flight)
                continue
            try:
                ray.get(flight.ref, timeout=0)
                self._counters.acked += len(flight.records)
                if self.acked_ids is not None:
                    self.acked_ids.extend(r["id"] for r in flight.records)
            except Exception as exc:  # resent, or after the last attempt written to the fallback with the reason
                self._counters.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                metrics.record_error("log_handler", "not_acknowledged")
                self._shipper = None  # look it up again: it may have been recreated
                if flight.attempts >= _MAX_SEND_ATTEMPTS:
                    self._to_fallback(flight.records, f"not acknowledged after {flight.attempts} sends")
                else:
                    retry.append(flight)
        self._inflight = still
        for flight in retry:
            self._counters.resent_batches += 1
            self._send(flight.records, flight.payload, flight.attempts + 1)

    def _to_fallback(self, records: list[dict[str, Any]], reason: str) -> None:
        self._counters.fallback += len(records)
        self._fallback.write(records, note=reason)

    def _report_drops(self) -> None:
        with self._drop_lock:
            count, self._unreported_drops = self._unreported_drops, 0
            dropped = dict(self._counters.dropped)
        if count:
            self._fallback.alarm(
                f"log buffer full: dropped {count} records (totals by reason and level: {dropped})",
                source_id=self.source_id,
            )

    def _report_emit_errors(self) -> None:
        """Records emit() lost since the last report: counted and written to the fallback with the reason."""
        c = self._counters
        total = c.handler_errors
        new, self._reported_handler_errors = total - self._reported_handler_errors, total
        if new <= 0:
            return
        metrics.record_error("log_handler", "emit", new)
        self._fallback.alarm(
            f"log handler: emit lost {new} records ({total} in total); last error: {c.last_emit_error}",
            source_id=self.source_id,
        )

    # --- control ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters of this process's handler: emitted, buffered, sent, acked, in flight, fallback, dropped."""
        c = self._counters
        inflight = list(self._inflight)
        return {
            "source_id": self.source_id,
            "pid": os.getpid(),
            "emitted": c.emitted,
            "buffered": len(self._buffer),
            "sent": c.sent,
            "acked": c.acked,
            "inflight_records": sum(len(f.records) for f in inflight),
            "oldest_unacked_s": (time.monotonic() - min(f.sent_at for f in inflight)) if inflight else 0.0,
            "resent_batches": c.resent_batches,
            "fallback": c.fallback,
            "dropped": dict(c.dropped),
            "send_errors": c.send_errors,
            "handler_errors": c.handler_errors,
            "sender_rounds": c.sender_rounds,
            "last_error": c.last_error,
        }

    def flush(self, timeout: float = 2.0) -> bool:  # type: ignore[override]
        """Wait (bounded) until every buffered record is acknowledged or in the fallback."""
        deadline = time.monotonic() + timeout
        self._idle.clear()
        self._force = True
        self._wake.set()
        while time.monotonic() < deadline:
            # Order matters: the sender sets _pumping before it pops from the buffer.
            if not self._buffer and not self._inflight and not self._pumping and self._sender.is_alive():
                return True
            if not self._sender.is_alive():
                return False
            self._idle.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._force = True
            self._wake.set()
        return not self._buffer and not self._inflight

    def close(self) -> None:
        try:
            self.flush(timeout=2.0)
        except Exception as exc:  # closing goes on: the sender's last round still sends what is left
            self._failed("close", exc)
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=2.0)
        super().close()


_installed: ShippingLogHandler | None = None
_install_lock = threading.Lock()


def install_log_handler(
    settings: OrchestratorSettings,
    *,
    source_type: str,
    source_id: str,
    shipper_lookup: Callable[[], Any],
    keep_acked_ids: bool = False,
) -> ShippingLogHandler:
    """Install the shipping handler on the root logger of this process (idempotent) and return it.

    Registers every secret of `settings` for redaction. Lowers the root logger's level to
    `log_shipping.level` if it is higher, so INFO records reach the handler. A second call returns
    the installed handler with its source updated.
    """
    global _installed
    redaction.register_secrets(settings)
    with _install_lock:
        root = logging.getLogger()
        if _installed is not None and _installed in root.handlers:
            _installed.source_type, _installed.source_id = source_type, source_id
            return _installed
        handler = ShippingLogHandler(
            settings,
            source_type=source_type,
            source_id=source_id,
            shipper_lookup=shipper_lookup,
            keep_acked_ids=keep_acked_ids,
        )
        root.addHandler(handler)
        wanted = logging.getLevelName(settings.log_shipping.level)
        if root.level == logging.NOTSET or root.level > wanted:
            root.setLevel(wanted)
        _installed = handler
        return handler
