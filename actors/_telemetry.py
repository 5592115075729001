"""The one door from the Scaler and WorkerLifecycle actors to `telemetry/`.

Telemetry is built in parallel with the actors, so each function here calls the real one when it is
importable and otherwise does nothing (returning what a disabled tracer would). Telemetry must never
stop a control loop: a failure inside a telemetry call is logged here and swallowed, which is the
one place where swallowing is right, because the decision record and `worker_events` (in the
database) stay the audit trail of record.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def _attr(module: str, name: str) -> Any | None:
    try:
        return getattr(importlib.import_module(module), name, None)
    except Exception:  # a half-written module of a colleague must not break the actors
        logger.debug("telemetry %s.%s not available", module, name, exc_info=True)
        return None


def _call(module: str, name: str, *args: Any, **kwargs: Any) -> Any | None:
    fn = _attr(module, name)
    if fn is None:
        return None
    try:
        return fn(*args, **kwargs)
    except Exception:
        logger.exception("telemetry call %s.%s failed", module, name)
        return None


def setup_process(settings: Any, *, component: str, identity: str) -> None:
    """Tracing and the log handler for this (actor) process."""
    _call("telemetry.tracing", "setup_tracing", settings.telemetry, component=component, identity=identity)
    _call("telemetry.log_handler", "install_log_handler", settings, source_type="orchestrator", source_id=identity)


def start_lifecycle_trace(
    worker_id: str, *, decision_span: Any | None = None, attributes: dict[str, Any] | None = None
) -> str | None:
    """The anchor span of a worker's lifecycle trace, linked to the decision; returns its traceparent."""
    return _call(
        "telemetry.tracing",
        "start_lifecycle_trace",
        worker_id,
        decision_span_context=decision_span,
        attributes=attributes,
    )


class _NullTrace:
    def begin_phase(self, name: str) -> None:
        pass

    def set_phase_attributes(self, attributes: dict[str, Any]) -> None:
        pass

    def transition(self, from_state: str | None, to_state: str, reason: str) -> None:
        pass

    def end(self, outcome: str, reason: str) -> None:
        pass


def lifecycle_trace(traceparent: str | None, worker_id: str) -> Any:
    """A LifecycleTrace continuing the stored trace, or a no-op stand-in."""
    cls = _attr("telemetry.tracing", "LifecycleTrace")
    if cls is None or not traceparent:
        return _SafeTrace(_NullTrace())
    try:
        return _SafeTrace(cls(traceparent, worker_id))
    except Exception:
        logger.exception("LifecycleTrace(%s) failed", worker_id)
        return _SafeTrace(_NullTrace())


class _SafeTrace:
    """Wraps a LifecycleTrace so that no tracing error reaches the lifecycle loop."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def _safe(self, name: str, *args: Any) -> None:
        try:
            getattr(self._inner, name)(*args)
        except Exception:
            logger.exception("lifecycle trace %s failed", name)

    def begin_phase(self, name: str) -> None:
        self._safe("begin_phase", name)

    def set_phase_attributes(self, attributes: dict[str, Any]) -> None:
        self._safe("set_phase_attributes", attributes)

    def transition(self, from_state: str | None, to_state: str, reason: str) -> None:
        self._safe("transition", from_state, to_state, reason)

    def end(self, outcome: str, reason: str) -> None:
        self._safe("end", outcome, reason)


@contextlib.contextmanager
def decision_span(cycle_number: int, attributes: Mapping[str, Any]) -> Iterator[Any]:
    """The Scaler's per-cycle decision span (a no-op context when tracing is absent)."""
    fn = _attr("telemetry.tracing", "decision_span")
    cm = None
    if fn is not None:
        try:
            cm = fn(cycle_number, dict(attributes))
        except Exception:
            logger.exception("decision_span failed")
    if cm is None:
        yield None
        return
    with cm as span:
        yield span


def record(name: str, *args: Any, **kwargs: Any) -> None:
    """`telemetry.metrics.record_<name>(...)` when it exists."""
    _call("telemetry.metrics", f"record_{name}", *args, **kwargs)


def probe_log_shipper(settings: Any) -> Any | None:
    """One LogShipper health probe, healing it through Ray when stuck (telemetry's `probe_and_heal`)."""
    get_shipper: Callable[..., Any] | None = _attr("actors.remote", "get_or_create_log_shipper")
    probe: Callable[..., Any] | None = _attr("telemetry.shipper_health", "probe_and_heal") or _attr(
        "telemetry", "probe_and_heal"
    )
    if get_shipper is None or probe is None:
        return None
    handle = get_shipper(settings)
    return probe(handle, settings)


def record_transition(row: Any, transition: Any) -> None:
    """Metrics of one recorded worker transition (in the WorkerLifecycle): terminations by reason.

    Boot time is not recorded here: a lifecycle process is often SIGKILLed or ends within Ray's
    metrics report interval (10 s) of the promotion, and what a process recorded since its last
    report dies with it. The Scaler, which lives, records it from the rows (`record_fleet`).
    """
    code = transition.reason.split(":", 1)[0]
    to = getattr(transition.to, "value", transition.to)
    if to == "terminated":
        record("termination", code)


class _BootTimes:
    """Boot time (`promoted_at - created_at`, from the rows) of each worker promoted since this process started.

    Each worker is observed once per process; one promoted before this process started was counted
    by the previous Scaler process (a restart would count it again otherwise). A worker promoted and
    gone between two cycles is not seen; with cycles of seconds and pods living minutes that is rare.
    """

    def __init__(self) -> None:
        self._since = time.time()
        self._seen: set[str] = set()

    def observe(self, rows: Iterable[Any]) -> None:
        live = set()
        for row in rows:
            live.add(row.id)
            promoted = getattr(row, "promoted_at", None)
            if promoted is None or row.id in self._seen:
                continue
            self._seen.add(row.id)
            if promoted.timestamp() >= self._since and row.created_at is not None:
                record("boot_time", max(0.0, (promoted - row.created_at).total_seconds()), row.gpu_type)
        self._seen &= live  # a row that left the live list never comes back


_boot_times = _BootTimes()


def record_fleet(rows: Iterable[Any] | None) -> None:
    """Metrics the Scaler derives from the live worker rows of a cycle (boot times). Never raises."""
    if rows is None:
        return
    try:
        _boot_times.observe(rows)
    except Exception:
        logger.exception("fleet metrics failed")


def current_trace_id() -> str | None:
    return _call("telemetry.tracing", "current_trace_id")


def set_span_attributes(span: Any, attributes: Mapping[str, Any]) -> None:
    """Add attributes to an open span (the decision span), dropping values OTel cannot carry."""
    if span is None:
        return
    clean = {k: v for k, v in attributes.items() if isinstance(v, str | bool | int | float)}
    try:
        span.set_attributes(clean)
    except Exception:
        logger.debug("span attributes not set", exc_info=True)
