"""The orchestrator's Ray metrics (`ray.util.metrics`), shown by the Ray dashboard and its Prometheus endpoint.

Metrics are created lazily, once per process, on first use; outside a Ray process (or if Ray's
metrics fail) every function here does nothing and never raises, so control loops can call them
freely. Ray exports each series with a `ray_` prefix and per worker process, so a restarted actor's
counters start again from zero: alert on rates and on `orchestrator_log_shipper_restarts`.

| series (without `ray_`)                      | kind      | tags                   |
|----------------------------------------------|-----------|------------------------|
| orchestrator_workers                         | gauge     | state                  |
| orchestrator_tasks                           | gauge     | kind (queued, claimable, in_progress) |
| orchestrator_spawns                          | counter   | reason                 |
| orchestrator_terminations                    | counter   | reason                 |
| orchestrator_breaker_state                   | gauge     | state (1 = current)    |
| orchestrator_cycle_duration_seconds          | histogram |                        |
| orchestrator_boot_time_seconds               | histogram | gpu_type               |
| orchestrator_log_records                     | counter   | outcome: shipped, spooled, rejected, dropped...|
| orchestrator_log_records_pending             | gauge     |                        |
| orchestrator_log_shipper_restarts            | counter   | reason                 |
| orchestrator_log_seconds_since_flush         | gauge     |                        |
| orchestrator_log_shipper_up                  | gauge     | (1 answered and ok, 0 not) |
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BREAKER_STATES",
    "WORKER_STATES",
    "record_boot_time",
    "record_cycle",
    "record_log_shipper_health",
    "record_log_shipper_restart",
    "record_log_shipper_stats",
    "record_spawn",
    "record_termination",
]

log = logging.getLogger(__name__)

WORKER_STATES = ("spawning", "active", "draining", "terminating", "terminated", "error")
BREAKER_STATES = ("closed", "open", "half_open")
_CYCLE_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
_BOOT_BOUNDARIES = [10, 30, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1800]

# name -> (kind, description, tag keys, boundaries)
_SPECS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    "orchestrator_workers": ("gauge", "Workers by lifecycle state.", ("state",), None),
    "orchestrator_tasks": ("gauge", "Tasks queued, claimable and in progress.", ("kind",), None),
    "orchestrator_spawns": ("counter", "Workers spawned, by reason.", ("reason",), None),
    "orchestrator_terminations": ("counter", "Workers terminated, by reason.", ("reason",), None),
    "orchestrator_breaker_state": ("gauge", "Failure-rate breaker: 1 for the current state.", ("state",), None),
    "orchestrator_cycle_duration_seconds": ("histogram", "Scaler cycle duration.", (), _CYCLE_BOUNDARIES),
    "orchestrator_boot_time_seconds": (
        "histogram",
        "Pod creation to first heartbeat.",
        ("gpu_type",),
        _BOOT_BOUNDARIES,
    ),
    "orchestrator_log_records": ("counter", "Log records by outcome in the LogShipper.", ("outcome",), None),
    "orchestrator_log_records_pending": ("gauge", "Records spooled, not yet in the database.", (), None),
    "orchestrator_log_shipper_restarts": ("counter", "LogShipper restarts asked by the probe.", ("reason",), None),
    "orchestrator_log_seconds_since_flush": ("gauge", "Seconds since the last successful log flush.", (), None),
    "orchestrator_log_shipper_up": ("gauge", "1 when the LogShipper answered its probe and was ok.", (), None),
}

_lock = threading.Lock()
_metrics: dict[str, Any] = {}
_disabled = False


def _metric(name: str) -> Any | None:
    """The metric object, created on first use; None outside Ray."""
    global _disabled
    found = _metrics.get(name)
    if found is not None or _disabled:
        return found
    try:
        import ray

        if not ray.is_initialized():
            return None
        from ray.util import metrics as ray_metrics

        kind, description, tags, boundaries = _SPECS[name]
        with _lock:
            found = _metrics.get(name)
            if found is None:
                if kind == "gauge":
                    found = ray_metrics.Gauge(name, description=description, tag_keys=tags)
                elif kind == "counter":
                    found = ray_metrics.Counter(name, description=description, tag_keys=tags)
                else:
                    found = ray_metrics.Histogram(name, description=description, boundaries=boundaries, tag_keys=tags)
                _metrics[name] = found
        return found
    except Exception:
        log.debug("Ray metrics unavailable; metrics disabled in this process", exc_info=True)
        _disabled = True
        return None


def _safe(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.debug("metric %s failed", fn.__name__, exc_info=True)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


@_safe
def record_cycle(
    duration_s: float,
    snapshot: Any | None = None,
    workers_by_state: Mapping[str, int] | None = None,
    breaker_status: str | None = None,
) -> None:
    """One Scaler cycle: its duration, the demand snapshot (queued/claimable/in_progress), workers by state
    (every known state is set, missing ones to 0) and the breaker state (a str or an enum value)."""
    hist = _metric("orchestrator_cycle_duration_seconds")
    if hist is not None:
        hist.observe(max(0.0, float(duration_s)))
    tasks = _metric("orchestrator_tasks")
    if tasks is not None and snapshot is not None:
        for kind in ("queued", "claimable", "in_progress"):
            value = _field(snapshot, kind)
            if value is not None:
                tasks.set(float(value), tags={"kind": kind})
    workers = _metric("orchestrator_workers")
    if workers is not None and workers_by_state is not None:
        counts = {str(getattr(k, "value", k)): v for k, v in workers_by_state.items()}
        for state in sorted(set(WORKER_STATES) | set(counts)):
            workers.set(float(counts.get(state, 0)), tags={"state": state})
    breaker = _metric("orchestrator_breaker_state")
    if breaker is not None and breaker_status is not None:
        current = str(getattr(breaker_status, "value", breaker_status))
        for state in sorted(set(BREAKER_STATES) | {current}):
            breaker.set(1.0 if state == current else 0.0, tags={"state": state})


@_safe
def record_spawn(reason: str, count: int = 1) -> None:
    counter = _metric("orchestrator_spawns")
    if counter is not None and count > 0:
        counter.inc(count, tags={"reason": reason})


@_safe
def record_termination(reason: str, count: int = 1) -> None:
    counter = _metric("orchestrator_terminations")
    if counter is not None and count > 0:
        counter.inc(count, tags={"reason": reason})


@_safe
def record_boot_time(seconds: float, gpu_type: str | None = None) -> None:
    hist = _metric("orchestrator_boot_time_seconds")
    if hist is not None:
        hist.observe(max(0.0, float(seconds)), tags={"gpu_type": gpu_type or "unknown"})


@_safe
def record_log_shipper_restart(reason: str = "probe") -> None:
    counter = _metric("orchestrator_log_shipper_restarts")
    if counter is not None:
        counter.inc(1, tags={"reason": reason})


@_safe
def record_log_shipper_health(
    health: Mapping[str, Any] | None, ok: bool | None = None, now: float | None = None
) -> None:
    """What the Scaler's probe saw: up or not, pending records, seconds since the last flush."""
    up = _metric("orchestrator_log_shipper_up")
    if up is not None:
        up.set(1.0 if (health is not None and ok is not False) else 0.0)
    if health is None:
        return
    _set_flush_gauges(health, now if now is not None else time.time())


def _set_flush_gauges(health: Mapping[str, Any], now: float) -> None:
    pending = _metric("orchestrator_log_records_pending")
    if pending is not None:
        pending.set(float(health.get("records_pending") or 0))
    since = _metric("orchestrator_log_seconds_since_flush")
    if since is not None:
        last = health.get("last_flush_at") or health.get("started_at")
        if last is not None:
            since.set(max(0.0, now - float(last)))


_OUTCOMES = {
    "shipped": "shipped",
    "spooled": "spooled",
    "rejected": "rejected",
    "dropped_total": "dropped",
    "duplicates": "duplicate",
    "fallback_records": "fallback",
}


@_safe
def record_log_shipper_stats(health: Mapping[str, Any], state: dict[str, float]) -> None:
    """Called by the LogShipper itself about once a second: counter deltas since the last call
    (`state` keeps the previous figures) and the flush gauges."""
    counter = _metric("orchestrator_log_records")
    if counter is not None:
        for key, outcome in _OUTCOMES.items():
            value = float(health.get(key) or 0)
            delta = value - state.get(key, 0.0)
            if delta > 0:
                counter.inc(delta, tags={"outcome": outcome})
            state[key] = value
    _set_flush_gauges(health, float(health.get("now") or time.time()))
