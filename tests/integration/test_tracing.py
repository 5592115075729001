"""One lifecycle trace exported through the real OTLP HTTP exporter to a loopback receiver.

The LifecycleTrace is recreated mid-way on a new TracerProvider (what a restarted WorkerLifecycle
does), and a worker's task span made in another process from TRACEPARENT joins the same trace.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import OrchestratorSettings, TelemetrySettings
from telemetry import tracing
from telemetry.redact import register_secrets
from tests.support.otlp_receiver import OtlpReceiver
from worker.tracing import TASK_SPAN, task_span

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rcv:
        yield rcv
    tracing.reset_tracing()


def test_lifecycle_across_a_restart_and_a_worker_process(receiver: OtlpReceiver) -> None:
    secret = "rpa_SECRETSECRETSECRET1234"
    settings = OrchestratorSettings(provider={"runpod_api_key": secret})
    register_secrets(settings)
    telemetry = TelemetrySettings(otlp_endpoint=receiver.endpoint)
    tracing.setup_tracing(telemetry, component="scaler", identity="scaler")
    with tracing.decision_span(7, {"spawn": 1}) as decision:
        traceparent = tracing.start_lifecycle_trace("gpu-w1", decision_span_context=decision)
    life = tracing.LifecycleTrace(traceparent, "gpu-w1")
    life.begin_phase("provision", {"gpu_type": "RTX 4090", "note": f"key {secret}"})
    life.transition(None, "spawning", "decided")
    life.begin_phase("boot")
    tracing.flush()

    # "Restart": a new provider (new resource identity), a new LifecycleTrace from the stored string.
    tracing.reset_tracing()
    tracing.setup_tracing(telemetry, component="worker-lifecycle", identity="worker:gpu-w1")
    life = tracing.LifecycleTrace(traceparent, "gpu-w1")
    life.begin_phase("boot", {"resumed": True})
    life.transition("spawning", "active", "first heartbeat")
    life.begin_phase("active")

    # The worker, another process, gets the anchor as TRACEPARENT and its task span joins the trace.
    worker = textwrap.dedent(
        """
        import os
        from config.settings import TelemetrySettings
        from telemetry import tracing
        from worker import tracing as worker_tracing
        tracing.setup_tracing(TelemetrySettings(otlp_endpoint=os.environ["ENDPOINT"]),
                              component="worker", identity="gpu-w1")
        with worker_tracing.task_span(os.environ["TRACEPARENT"], {"task.id": "t1"}):
            pass
        tracing.flush()
        """
    )
    env = {**os.environ, "TRACEPARENT": traceparent, "ENDPOINT": receiver.endpoint, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", worker], env=env, check=True, cwd=ROOT, timeout=60)

    life.transition("active", "draining", "idle")
    life.begin_phase("drain")
    life.begin_phase("terminate")
    life.transition("terminating", "terminated", "provider confirmed")
    life.end("terminated", "idle past timeout")
    trace_id = life.trace_id

    spans = receiver.wait_for(
        lambda got: (
            any(s.name == tracing.END_SPAN for s in got)
            and any(s.name == TASK_SPAN for s in got)
            and any(s.name == tracing.DECISION_SPAN for s in got)
        ),
        timeout=20,
    )
    lifecycle = [s for s in spans if s.trace_id == trace_id]
    names = [s.name for s in lifecycle]
    assert tracing.ANCHOR_SPAN in names and TASK_SPAN in names and tracing.END_SPAN in names

    # Every parent id is a received span; the anchor is the root.
    ids = {s.span_id for s in lifecycle}
    anchor = next(s for s in lifecycle if s.name == tracing.ANCHOR_SPAN)
    assert anchor.parent_span_id is None
    assert all(s.parent_span_id in ids for s in lifecycle if s is not anchor)

    # Phases in order, closed by the end span. The first boot span was still open when its process
    # "died" and is lost with it; the restarted one reopened boot, and nothing points at the lost span.
    phases = sorted((s for s in lifecycle if s.name in tracing.PHASES), key=lambda s: s.start_ns)
    assert [s.name for s in phases] == ["provision", "boot", "active", "drain", "terminate"]
    assert phases[1].attributes.get("resumed") is True
    end = next(s for s in lifecycle if s.name == tracing.END_SPAN)
    assert end.attributes["outcome"] == "terminated"
    assert end.start_ns >= phases[-1].start_ns
    transitions = [s for s in lifecycle if s.name == tracing.TRANSITION_SPAN]
    assert [t.attributes["to"] for t in sorted(transitions, key=lambda s: s.start_ns)] == [
        "spawning",
        "active",
        "draining",
        "terminated",
    ]
    active = next(s for s in phases if s.name == "active")
    assert ("transition", {"worker.id": "gpu-w1", "from": "active", "to": "draining", "reason": "idle"}) in [
        (n, a) for n, a in active.events
    ]

    # Both processes' identities; the decision span links to the anchor and back.
    identities = {s.resource.get("orchestrator.identity") for s in lifecycle}
    assert {"scaler", "worker:gpu-w1", "gpu-w1"} <= identities
    decision_span = next(s for s in spans if s.name == tracing.DECISION_SPAN)
    assert (anchor.trace_id, anchor.span_id) in [(t, sid) for t, sid, _ in decision_span.links]
    assert (decision_span.trace_id, decision_span.span_id) in [(t, sid) for t, sid, _ in anchor.links]

    # No secret in any attribute.
    for s in spans:
        assert secret not in repr(s.attributes) + repr(s.events) + repr(s.resource)
    assert not receiver.errors


def test_no_endpoint_exports_nothing_and_fails_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    tracing.reset_tracing()
    tracing.setup_tracing(TelemetrySettings(), component="cli", identity="test")
    traceparent = tracing.start_lifecycle_trace("gpu-x")
    assert traceparent.startswith("00-") and len(traceparent.split("-")[1]) == 32
    life = tracing.LifecycleTrace(traceparent, "gpu-x")
    life.begin_phase("provision")
    with task_span(traceparent, {}):
        assert tracing.current_trace_id() == life.trace_id
    life.end("error", "spawn failed")
    assert tracing.current_trace_id() is None
    tracing.reset_tracing()
