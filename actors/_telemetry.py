"""The one door from the Scaler, the WorkerLifecycle and the provisioner to `telemetry/`.

Telemetry must never stop a control loop: a failure inside a tracing or metrics call is logged
here, counted in `orchestrator_errors{component="telemetry"}` and not raised, because the decision
record and `worker_events` (in the database) stay the audit trail of record. The telemetry modules
are imported directly, so a renamed function fails loudly at import, never turns tracing off.

The actors layer also gives the log handler its way to the LogShipper (`log_shipper_lookup`):
telemetry knows nothing of actor names.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry.trace import Span

from actors import names
from config.settings import OrchestratorSettings
from fleet import lifecycle as machine
from fleet.models import DemandSnapshot, WorkerState
from store import base as store_base
from telemetry import log_handler, metrics, tracing

if TYPE_CHECKING:
    from ray.actor import ActorHandle

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


def record_error(component: str, reason: str) -> None:
    """Count one error that was handled and not raised (`orchestrator_errors`). Never raises."""
    metrics.record_error(component, reason)


def _call(what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T | None:
    """`fn(*args, **kwargs)`, or None (logged and counted) when it raises."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        record_error("telemetry", what)
        logger.exception("telemetry call %s failed", what)
        return None


def log_shipper_lookup(namespace: str) -> Callable[[], ActorHandle[Any] | None]:
    """How a log handler finds the LogShipper: by its name, None while Ray or the actor is not there."""

    def lookup() -> ActorHandle[Any] | None:
        import ray

        if not ray.is_initialized():
            return None
        try:
            handle: ActorHandle[Any] = ray.get_actor(names.LOG_SHIPPER_NAME, namespace=namespace)
        except ValueError:  # no such actor (yet): the handler looks again later
            return None
        return handle

    return lookup


def setup_process(settings: OrchestratorSettings, *, component: str, identity: str) -> None:
    """Tracing and the log handler for this (actor) process."""
    _call("setup_tracing", tracing.setup_tracing, settings.telemetry, component=component, identity=identity)
    _call(
        "install_log_handler",
        log_handler.install_log_handler,
        settings,
        source_type="orchestrator",
        source_id=identity,
        shipper_lookup=log_shipper_lookup(settings.ray.namespace),
    )


def start_lifecycle_trace(
    worker_id: str, *, decision_span: Span | None = None, attributes: dict[str, Any] | None = None
) -> str | None:
    """The anchor span of a worker's lifecycle trace, linked to the decision; returns its traceparent."""
    return _call(
        "start_lifecycle_trace",
        tracing.start_lifecycle_trace,
        worker_id,
        decision_span_context=decision_span,
        attributes=attributes,
    )


class _NullTrace:
    """The trace of a row without a stored trace context: records nothing."""

    def begin_phase(self, name: str) -> None:
        pass

    def set_phase_attributes(self, attributes: dict[str, Any]) -> None:
        pass

    def transition(self, from_state: str | None, to_state: str, reason: str) -> None:
        pass

    def end(self, outcome: str, reason: str) -> None:
        pass


class SafeTrace:
    """Wraps a LifecycleTrace so that no tracing error reaches the lifecycle loop."""

    def __init__(self, inner: tracing.LifecycleTrace | _NullTrace) -> None:
        self._inner = inner

    def begin_phase(self, name: str) -> None:
        _call("lifecycle_trace.begin_phase", self._inner.begin_phase, name)

    def set_phase_attributes(self, attributes: dict[str, Any]) -> None:
        _call("lifecycle_trace.set_phase_attributes", self._inner.set_phase_attributes, attributes)

    def transition(self, from_state: str | None, to_state: str, reason: str) -> None:
        _call("lifecycle_trace.transition", self._inner.transition, from_state, to_state, reason)

    def end(self, outcome: str, reason: str) -> None:
        _call("lifecycle_trace.end", self._inner.end, outcome, reason)


def lifecycle_trace(traceparent: str | None, worker_id: str) -> SafeTrace:
    """A LifecycleTrace continuing the stored trace, or a no-op stand-in when the row has none."""
    if not traceparent:
        return SafeTrace(_NullTrace())
    inner = _call("lifecycle_trace", tracing.LifecycleTrace, traceparent, worker_id)
    return SafeTrace(inner if inner is not None else _NullTrace())


def decision_span(cycle_number: int, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Span]:
    """The Scaler's per-cycle decision span."""
    return tracing.decision_span(cycle_number, dict(attributes))


def current_trace_id() -> str | None:
    return _call("current_trace_id", tracing.current_trace_id)


def set_span_attributes(span: Span | None, attributes: Mapping[str, Any]) -> None:
    """Add attributes to an open span (the decision span), dropping values OTel cannot carry."""
    if span is None:
        return
    clean = {k: v for k, v in attributes.items() if isinstance(v, str | bool | int | float)}
    _call("set_span_attributes", span.set_attributes, clean)


# --- metrics (telemetry.metrics never raises) ------------------------------------------------------


def record_cycle(
    duration_s: float,
    snapshot: DemandSnapshot | None,
    workers_by_state: Mapping[str, int],
    breaker_status: str,
) -> None:
    metrics.record_cycle(duration_s, snapshot, workers_by_state, breaker_status)


def record_spawns(count: int) -> None:
    metrics.record_spawn("scale_up", count)


def record_termination(reason: str) -> None:
    """A pod the Scaler terminated itself (duplicate, ended worker's), by its reason's code."""
    metrics.record_termination(machine.reason_code(reason))


def record_seconds_since_cycle(seconds: float) -> None:
    metrics.record_seconds_since_cycle(seconds)


def record_transition(transition: machine.Transition) -> None:
    """Metrics of one recorded worker transition (in the WorkerLifecycle): terminations by reason.

    Boot time is not recorded here: a lifecycle process is often SIGKILLed or ends within Ray's
    metrics report interval (10 s) of the promotion, and what a process recorded since its last
    report dies with it. The Scaler, which lives, records it from the rows (`record_fleet`).
    """
    if transition.to is WorkerState.TERMINATED:
        metrics.record_termination(transition.code)


class _BootTimes:
    """Boot time (`promoted_at - created_at`, from the rows) of each worker promoted since this process started.

    Each worker is observed once per process; one promoted before this process started was counted
    by the previous Scaler process (a restart would count it again otherwise). A worker promoted and
    gone between two cycles is not seen; with cycles of seconds and pods living minutes that is rare.
    """

    def __init__(self) -> None:
        self._since = time.time()
        self._seen: set[str] = set()

    def observe(self, rows: Iterable[store_base.WorkerRow]) -> None:
        live = set()
        for row in rows:
            live.add(row.id)
            promoted = row.promoted_at
            if promoted is None or row.id in self._seen:
                continue
            self._seen.add(row.id)
            if promoted.timestamp() >= self._since:
                metrics.record_boot_time(max(0.0, (promoted - row.created_at).total_seconds()), row.gpu_type)
        self._seen &= live  # a row that left the live list never comes back


_boot_times = _BootTimes()


def record_fleet(rows: Iterable[store_base.WorkerRow] | None) -> None:
    """Metrics the Scaler derives from the live worker rows of a cycle (boot times). Never raises."""
    if rows is None:
        return
    _call("record_fleet", _boot_times.observe, rows)
