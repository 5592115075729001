"""Span export over OTLP, imported by `telemetry.tracing.setup_tracing` only when an endpoint is set.

Kept apart so that a process that exports nothing (a WorkerLifecycle with no endpoint configured,
one per pod) loads neither the SDK's batch processor nor an OTLP exporter; with an endpoint it
loads the one its protocol needs (`http/protobuf` a fraction of a MiB, `grpc` ~9 MiB of grpcio).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from telemetry import redact as redaction

__all__ = ["RedactingExporter", "batch_processor", "otlp_exporter"]


class RedactingExporter(SpanExporter):
    """Wraps the real exporter; string attributes of spans and events leave with secrets masked."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    @staticmethod
    def _clean(attributes: Mapping[str, Any] | None) -> tuple[dict[str, Any], bool]:
        out: dict[str, Any] = {}
        changed = False
        for key, value in (attributes or {}).items():
            cleaned = redaction.redact_value(value) if isinstance(value, str | list | tuple) else value
            if isinstance(value, tuple) and isinstance(cleaned, list):
                cleaned = tuple(cleaned)
            changed = changed or cleaned != value
            out[key] = cleaned
        return out, changed

    def _redacted(self, item: ReadableSpan) -> ReadableSpan:
        attributes, changed = self._clean(item.attributes)
        events = []
        for event in item.events:
            event_attrs, event_changed = self._clean(event.attributes)
            changed = changed or event_changed
            events.append((event, event_attrs))
        name = redaction.redact(item.name)
        if not changed and name == item.name:
            return item
        return ReadableSpan(
            name=name,
            context=item.context,
            parent=item.parent,
            resource=item.resource,
            attributes=attributes,
            events=[Event(e.name, attrs, e.timestamp) for e, attrs in events],
            links=item.links,
            kind=item.kind,
            status=item.status,
            start_time=item.start_time,
            end_time=item.end_time,
            instrumentation_scope=item.instrumentation_scope,
        )

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([self._redacted(s) for s in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def otlp_exporter(endpoint: str, protocol: str) -> SpanExporter:
    """The OTLP exporter of `protocol` (`grpc`, else `http/protobuf`), imported on first use."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        insecure = endpoint.startswith("http://")
        return GrpcExporter(endpoint=endpoint, insecure=insecure)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=endpoint, timeout=5)


def batch_processor(endpoint: str, protocol: str) -> BatchSpanProcessor:
    """The processor a TracerProvider exports through: batched (1 s), secrets masked on the way out."""
    return BatchSpanProcessor(RedactingExporter(otlp_exporter(endpoint, protocol)), schedule_delay_millis=1_000)
