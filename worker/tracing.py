"""Tracing for the worker: one span per task, inside the pod's lifecycle trace (TRACEPARENT).

Delegates to `telemetry.tracing` (the same setup as every orchestrator process): spans are
exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
is set; otherwise they still get real ids, so log records carry the lifecycle's trace id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from config.settings import TelemetrySettings
from telemetry import tracing

__all__ = ["TASK_SPAN", "setup_worker_tracing", "shutdown_worker_tracing", "task_span"]

logger = logging.getLogger(__name__)

TASK_SPAN = "worker.task"


def setup_worker_tracing(worker_id: str) -> None:
    """Give the worker process its TracerProvider (reads the standard OTEL_* variables)."""
    tracing.setup_tracing(TelemetrySettings(), component="worker", identity=worker_id)


def shutdown_worker_tracing() -> None:
    tracing.flush()


@contextmanager
def task_span(traceparent: str | None, attributes: dict[str, Any]) -> Iterator[Span]:
    """A `worker.task` span, child of the lifecycle anchor when `traceparent` is valid."""
    parent = tracing.context_from_traceparent(traceparent)
    if traceparent and parent is None:
        logger.warning("TRACEPARENT %r is not a valid W3C traceparent; the task span starts a new trace", traceparent)
    tracer = tracing.get_tracer()
    with tracer.start_as_current_span(
        TASK_SPAN, context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes, record_exception=False
    ) as span:
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
