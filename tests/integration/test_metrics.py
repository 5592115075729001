"""Ray metrics recorded from an actor appear on the Prometheus endpoint with the expected labels."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.prometheus import scrape as _scrape
from tests.support.prometheus import series as _series

pytestmark = pytest.mark.ray


def test_orchestrator_series_are_exported(ray_session: dict[str, Any]) -> None:
    import ray

    @ray.remote(num_cpus=0)
    class Recorder:
        def record(self) -> None:
            from telemetry import metrics

            metrics.record_cycle(
                0.42,
                {"queued": 5, "claimable": 3, "in_progress": 2},
                {"active": 2, "spawning": 1},
                "half_open",
            )
            metrics.record_spawn("claimable work waiting")
            metrics.record_termination("idle")
            metrics.record_boot_time(95.0, "RTX 4090")
            metrics.record_log_shipper_restart("flush_hung")
            health = {"records_pending": 7, "last_flush_at": time.time() - 3, "shipped": 10, "spooled": 17}
            metrics.record_log_shipper_health(health, ok=True)
            metrics.record_log_shipper_stats({**health, "dropped_total": 1, "rejected": 2}, {})
            metrics.record_error("scaler", "phase_sync")
            metrics.record_seconds_since_cycle(3.5)

    recorder = Recorder.remote()
    ray.get(recorder.record.remote())
    expected = {
        "orchestrator_workers": {"state": "active"},
        "orchestrator_tasks": {"kind": "claimable"},
        "orchestrator_spawns": {"reason": "claimable work waiting"},
        "orchestrator_terminations": {"reason": "idle"},
        "orchestrator_breaker_state": {"state": "half_open"},
        "orchestrator_cycle_duration_seconds": {},
        "orchestrator_boot_time_seconds": {"gpu_type": "RTX 4090"},
        "orchestrator_log_records": {"outcome": "rejected"},
        "orchestrator_log_records_pending": {},
        "orchestrator_log_shipper_restarts": {"reason": "flush_hung"},
        "orchestrator_log_seconds_since_flush": {},
        "orchestrator_log_shipper_up": {},
        "orchestrator_errors": {"component": "scaler", "reason": "phase_sync"},
        "orchestrator_seconds_since_cycle": {},
    }

    def missing(text: str) -> list[str]:
        return [
            name
            for name, labels in expected.items()
            if not any(labels.items() <= series.items() for series in _series(text, name))
        ]

    deadline = time.monotonic() + 40
    text = _scrape(ray_session["metrics_port"])
    while missing(text) and time.monotonic() < deadline:
        time.sleep(1)
        text = _scrape(ray_session["metrics_port"])
    assert not missing(text), f"missing series: {missing(text)}"
    workers = {s["state"] for s in _series(text, "orchestrator_workers")}
    assert {"spawning", "active", "draining", "error"} <= workers
    ray.kill(recorder)
