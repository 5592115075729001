"""One trace per worker lifecycle, readable in Jaeger even across actor restarts.

The lifecycle's root is a short anchor span, `worker.lifecycle.start`, ended and exported the
moment the Scaler decides the spawn; its W3C `traceparent` is stored in `workers.trace_context`.
Everything else hangs off that anchor as a remote parent: the phase spans (provision, boot,
active, drain, terminate), a short `worker.transition` span per state change, the final
`worker.lifecycle.end`, and the worker's own task spans (the pod gets the anchor as
`TRACEPARENT`). Only the anchor is ever a parent, so a phase span lost with a SIGKILLed process
leaves no span pointing at a parent that was never received.

A `BatchSpanProcessor` loses its queue when its process is SIGKILLed, so every span that marks a
transition is force-flushed at once. Each process calls `setup_tracing` once; with no OTLP endpoint
configured spans still get valid ids (so trace ids can be stored and logged) but nothing is
exported and nothing fails. String attributes are redacted on their way out (`telemetry.redact`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from config.settings import TelemetrySettings
from telemetry import metrics
from telemetry import redact as redaction

__all__ = [
    "ANCHOR_SPAN",
    "END_SPAN",
    "PHASES",
    "TRANSITION_SPAN",
    "LifecycleTrace",
    "context_from_traceparent",
    "current_trace_id",
    "decision_span",
    "flush",
    "get_tracer",
    "link_lifecycle",
    "reset_tracing",
    "setup_tracing",
    "start_lifecycle_trace",
    "traceparent_of",
]

log = logging.getLogger(__name__)

ANCHOR_SPAN = "worker.lifecycle.start"
END_SPAN = "worker.lifecycle.end"
TRANSITION_SPAN = "worker.transition"
DECISION_SPAN = "scaler.decision"
PHASES = ("provision", "boot", "active", "drain", "stop", "stopped", "resume", "terminate")
INSTRUMENTATION_NAME = "gpu_orchestrator"

# A transition flush waits at most this long for the collector: a slow Jaeger must not stall a
# lifecycle actor. Spans not sent in time stay queued in the batch processor.
_FLUSH_TIMEOUT_MS = 3_000

_lock = threading.Lock()
_provider: TracerProvider | None = None
_setup_key: tuple[Any, ...] | None = None
_propagator = TraceContextTextMapPropagator()


def _endpoint(settings: TelemetrySettings) -> tuple[str | None, str]:
    """The OTLP endpoint and protocol: settings first, then the standard OTEL_* variables."""
    # A pod gets OTEL_EXPORTER_OTLP_PROTOCOL (cloud/spec.py) and builds default settings: honour it.
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or settings.otlp_protocol
    )
    if protocol not in ("grpc", "http/protobuf"):
        protocol = settings.otlp_protocol
    traces_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if settings.otlp_endpoint:
        base = settings.otlp_endpoint.rstrip("/")
        if protocol == "grpc":
            return base, protocol
        return (base if base.endswith("/v1/traces") else base + "/v1/traces"), protocol
    if traces_endpoint:
        return traces_endpoint, protocol
    env_base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if env_base:
        env_base = env_base.rstrip("/")
        traces = env_base if protocol == "grpc" or env_base.endswith("/v1/traces") else env_base + "/v1/traces"
        return traces, protocol
    return None, protocol


def setup_tracing(settings: TelemetrySettings, *, component: str, identity: str) -> None:
    """Give this process its TracerProvider (idempotent: a second call with the same arguments does nothing).

    Resource attributes: `service.name`, `orchestrator.component` (scaler, worker-lifecycle,
    log-shipper, worker, cli), `orchestrator.identity` (actor name or worker id), `process.pid`.
    Spans are exported over OTLP only when an endpoint is configured (settings or OTEL_* variables)
    and OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER=none are honoured. Never raises: a broken exporter
    configuration is logged and tracing carries on without export.
    """
    global _provider, _setup_key
    endpoint, protocol = _endpoint(settings)
    service_name = os.environ.get("OTEL_SERVICE_NAME") or settings.service_name
    key = (service_name, component, identity, endpoint, protocol, settings.sampling_ratio)
    with _lock:
        if _provider is not None and _setup_key == key:
            return
        old = _provider
        resource = Resource.create(
            {
                "service.name": service_name,
                "orchestrator.component": component,
                "orchestrator.identity": identity,
                "process.pid": os.getpid(),
            }
        )
        provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)))
        disabled = os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or (
            os.environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none"
        )
        if endpoint and not disabled:
            try:
                # Imported only here: a process without an endpoint (a lifecycle, by default) loads no
                # batch processor and no OTLP exporter.
                from telemetry import span_export

                provider.add_span_processor(span_export.batch_processor(endpoint, protocol))
            except Exception:
                metrics.record_error("tracing", "exporter_setup")
                log.exception("OTLP exporter for %s could not be set up; spans will not be exported", endpoint)
        _provider, _setup_key = provider, key
    if old is not None:
        _shutdown(old)


def _shutdown(provider: TracerProvider) -> None:
    """Flush and stop a provider being replaced; a failure loses its unexported spans, and says so."""
    try:
        provider.shutdown()
    except Exception as exc:
        metrics.record_error("tracing", "provider_shutdown")
        log.warning("the previous tracer provider did not shut down cleanly: %s: %s", type(exc).__name__, exc)


def reset_tracing() -> None:
    """Flush and drop this process's provider (tests; a restart is simulated by a new provider)."""
    global _provider, _setup_key
    with _lock:
        old, _provider, _setup_key = _provider, None, None
    if old is not None:
        _shutdown(old)


def _ensure_provider() -> TracerProvider:
    global _provider, _setup_key
    with _lock:
        if _provider is None:
            # Not set up: spans still get real ids so trace ids can be stored; nothing is exported.
            _provider = TracerProvider(resource=Resource.create({"service.name": "gpu-orchestrator"}))
            _setup_key = ("implicit",)
        return _provider


def get_tracer() -> trace.Tracer:
    return _ensure_provider().get_tracer(INSTRUMENTATION_NAME)


def flush(timeout_millis: int = _FLUSH_TIMEOUT_MS) -> bool:
    """Export everything queued in this process now (bounded wait)."""
    provider = _provider
    if provider is None:
        return True
    try:
        return bool(provider.force_flush(timeout_millis))
    except Exception:
        metrics.record_error("tracing", "flush")
        log.warning("span flush failed", exc_info=True)
        return False


def _clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """OTel accepts str/bool/int/float and sequences of them; anything else is stringified."""
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if value is None:
            continue
        if isinstance(value, str):
            out[key] = redaction.redact(value)
        elif isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float) for v in value):
            out[key] = [redaction.redact(v) if isinstance(v, str) else v for v in value]
        else:
            out[key] = redaction.redact(str(value))
    return out


def traceparent_of(span_or_context: Span | SpanContext) -> str:
    """The W3C traceparent string of a span or span context ("" when it is invalid)."""
    span_context = span_or_context.get_span_context() if isinstance(span_or_context, Span) else span_or_context
    if not span_context.is_valid:
        return ""
    carrier: dict[str, str] = {}
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
    _propagator.inject(carrier, context=ctx)
    return carrier.get("traceparent", "")


def context_from_traceparent(traceparent: str | None) -> otel_context.Context | None:
    """An OTel context whose (remote) parent is `traceparent`, or None when it is missing or invalid."""
    if not traceparent:
        return None
    ctx = _propagator.extract({"traceparent": traceparent})
    if not trace.get_current_span(ctx).get_span_context().is_valid:
        return None
    return ctx


def _span_context_of(obj: object) -> SpanContext | None:
    if isinstance(obj, Span):
        return obj.get_span_context()
    if isinstance(obj, SpanContext):
        return obj
    if isinstance(obj, str):
        ctx = context_from_traceparent(obj)
        return trace.get_current_span(ctx).get_span_context() if ctx is not None else None
    return None


def start_lifecycle_trace(
    worker_id: str, *, decision_span_context: object | None = None, attributes: dict[str, Any] | None = None
) -> str:
    """Start the lifecycle trace of `worker_id`: an anchor span, ended and flushed at once.

    Returns its traceparent, to be stored in `workers.trace_context`. When `decision_span_context`
    (a Span, SpanContext or traceparent) is given, the anchor links to the decision and, if it is a
    recording Span, the decision span gets a link back to the anchor (both directions in Jaeger).
    """
    tracer = get_tracer()
    decision_ctx = _span_context_of(decision_span_context) if decision_span_context is not None else None
    links = [Link(decision_ctx, {"link.kind": "decided_by"})] if decision_ctx and decision_ctx.is_valid else []
    attrs = {"worker.id": worker_id, "lifecycle.event": "start", **(attributes or {})}
    # An empty context: the anchor is the root of a new trace even inside the decision span.
    anchor = tracer.start_span(
        ANCHOR_SPAN, context=otel_context.Context(), links=links, attributes=_clean_attributes(attrs)
    )
    anchor.end()
    traceparent = traceparent_of(anchor)
    if isinstance(decision_span_context, Span):
        link_lifecycle(decision_span_context, traceparent)
    flush()
    return traceparent


def link_lifecycle(span_obj: Span, traceparent: str, attributes: dict[str, Any] | None = None) -> None:
    """Add a link from `span_obj` (e.g. the decision span) to the lifecycle anchor `traceparent`."""
    target = _span_context_of(traceparent)
    if target is None or not span_obj.is_recording():
        return
    try:
        span_obj.add_link(target, _clean_attributes({"link.kind": "spawned", **(attributes or {})}))
    except Exception as exc:
        metrics.record_error("tracing", "link_lifecycle")
        log.warning("could not link span to lifecycle %s: %s: %s", traceparent, type(exc).__name__, exc)


class LifecycleTrace:
    """Adds phases and transitions to one worker's lifecycle trace, from any process, any number of times.

    Create it from the stored `workers.trace_context`; a restarted WorkerLifecycle creates a new one
    from the same string and keeps adding to the same trace. An invalid or missing traceparent
    starts a fresh trace (see `traceparent`, which the caller may store).
    """

    def __init__(self, traceparent: str, worker_id: str) -> None:
        self.worker_id = worker_id
        ctx = context_from_traceparent(traceparent)
        if ctx is None:
            traceparent = start_lifecycle_trace(worker_id, attributes={"lifecycle.recovered": True})
            ctx = context_from_traceparent(traceparent)
        self.traceparent = traceparent
        self._parent = ctx if ctx is not None else otel_context.Context()
        self._anchor = trace.get_current_span(self._parent).get_span_context()
        self._phase: Span | None = None
        self._lock = threading.Lock()

    @property
    def trace_id(self) -> str:
        return format(self._anchor.trace_id, "032x")

    def begin_phase(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        """Open the span of phase `name` (provision, boot, active, drain, terminate), ending the previous one."""
        with self._lock:
            self._end_phase_locked()
            attrs = {"worker.id": self.worker_id, "lifecycle.phase": name, **(attributes or {})}
            self._phase = get_tracer().start_span(name, context=self._parent, attributes=_clean_attributes(attrs))
        flush()

    def set_phase_attributes(self, attributes: dict[str, Any]) -> None:
        """Add facts to the open phase span (GPU chosen, fallbacks tried, pod id...)."""
        with self._lock:
            if self._phase is not None:
                self._phase.set_attributes(_clean_attributes(attributes))

    def transition(self, from_state: str | None, to_state: str, reason: str) -> None:
        """Record a state change: an event on the open phase span and a short span, flushed at once."""
        attrs = _clean_attributes(
            {"worker.id": self.worker_id, "from": from_state or "", "to": to_state, "reason": reason}
        )
        with self._lock:
            if self._phase is not None:
                self._phase.add_event("transition", attrs)
            span_obj = get_tracer().start_span(TRANSITION_SPAN, context=self._parent, attributes=attrs)
            span_obj.end()
        flush()

    def end(self, outcome: str, reason: str) -> None:
        """Close the lifecycle: end the open phase and emit `worker.lifecycle.end`, flushed."""
        attrs = _clean_attributes(
            {"worker.id": self.worker_id, "lifecycle.event": "end", "outcome": outcome, "reason": reason}
        )
        with self._lock:
            self._end_phase_locked()
            span_obj = get_tracer().start_span(END_SPAN, context=self._parent, attributes=attrs)
            if outcome in ("error", "failed"):
                span_obj.set_status(Status(StatusCode.ERROR, reason))
            span_obj.end()
        flush()

    def _end_phase_locked(self) -> None:
        if self._phase is not None:
            self._phase.end()
            self._phase = None


@contextlib.contextmanager
def decision_span(cycle_number: int, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """The Scaler's span for one cycle (a root span, current inside the block).

    Pass it to `start_lifecycle_trace(worker_id, decision_span_context=span)` for each spawn: the
    anchor links to the decision and the decision links to the anchor. `link_lifecycle(span, tp)`
    adds a link to an existing lifecycle (e.g. a drain decision).
    """
    attrs = {"scaler.cycle_number": cycle_number, **(attributes or {})}
    tracer = get_tracer()
    with tracer.start_as_current_span(
        DECISION_SPAN, context=otel_context.Context(), attributes=_clean_attributes(attrs)
    ) as span_obj:
        yield span_obj


def current_trace_id() -> str | None:
    """The 32-hex trace id of the current span, or None outside any span."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x")
