"""The orchestrator's Ray metrics (`ray.util.metrics`), shown by the Ray dashboard and its Prometheus endpoint.

Metrics are created lazily, once per process, on first use; outside a Ray process every function
here does nothing, and no function here ever raises, so control loops can call them freely. A
metric that cannot be created or recorded is logged at WARNING (at most once a minute per metric)
and counted in `orchestrator_errors{component="metrics"}`; the other metrics carry on.

Ray exports each series with a `ray_` prefix and per worker process, so a restarted actor's
counters start again from zero: alert on rates and on `orchestrator_log_shipper_restarts`.

| series (without `ray_`)                      | kind      | tags                   |
|----------------------------------------------|-----------|------------------------|
| orchestrator_workers                         | gauge     | state                  |
| orchestrator_tasks                           | gauge     | kind (queued, claimable, in_progress) |
| orchestrator_spawns                          | counter   | reason                 |
| orchestrator_terminations                    | counter   | reason                 |
| orchestrator_breaker_state                   | gauge     | state (1 = current)    |
| orchestrator_cycle_duration_seconds          | histogram |                        |
| orchestrator_seconds_since_cycle             | gauge     | (set every second, also while a cycle hangs) |
| orchestrator_boot_time_seconds               | histogram | gpu_type               |
| orchestrator_log_records                     | counter   | outcome: shipped, spooled, rejected, dropped...|
| orchestrator_log_records_pending             | gauge     |                        |
| orchestrator_log_shipper_restarts            | counter   | reason                 |
| orchestrator_log_seconds_since_flush         | gauge     |                        |
| orchestrator_log_shipper_up                  | gauge     | (1 answered and ok, 0 not) |
| orchestrator_errors                          | counter   | component, reason      |

`orchestrator_errors` counts every error the orchestrator handled and carried on after (a failed
phase, a provider call retried, a log batch sent to the fallback...): each is also logged at
WARNING or above with its reason, so a rising rate says where to look.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec

__all__ = [
    "BREAKER_STATES",
    "WORKER_STATES",
    "record_boot_time",
    "record_cycle",
    "record_error",
    "record_log_shipper_health",
    "record_log_shipper_restart",
    "record_log_shipper_stats",
    "record_seconds_since_cycle",
    "record_spawn",
    "record_termination",
]

log = logging.getLogger(__name__)

WORKER_STATES = (
    "spawning",
    "active",
    "draining",
    "stopping",
    "stopped",
    "resuming",
    "terminating",
    "terminated",
    "error",
)
BREAKER_STATES = ("closed", "open", "half_open")
_CYCLE_BOUNDARIES: list[float] = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
_BOOT_BOUNDARIES: list[float] = [10, 30, 60, 90, 120, 180, 240, 300, 450, 600, 900, 1800]
_ERRORS = "orchestrator_errors"
# A metric that fails on every call is logged at most this often (it is counted every time).
_WARN_EVERY_S = 60.0

# name -> (kind, description, tag keys, boundaries)
_SPECS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    "orchestrator_workers": ("gauge", "Workers by lifecycle state.", ("state",), None),
    "orchestrator_tasks": ("gauge", "Tasks queued, claimable and in progress.", ("kind",), None),
    "orchestrator_spawns": ("counter", "Workers spawned, by reason.", ("reason",), None),
    "orchestrator_terminations": ("counter", "Workers terminated, by reason.", ("reason",), None),
    "orchestrator_breaker_state": ("gauge", "Failure-rate breaker: 1 for the current state.", ("state",), None),
    "orchestrator_cycle_duration_seconds": ("histogram", "Scaler cycle duration.", (), _CYCLE_BOUNDARIES),
    "orchestrator_seconds_since_cycle": (
        "gauge",
        "Seconds since the Scaler last completed a cycle (rises while the loop is stuck).",
        (),
        None,
    ),
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
    _ERRORS: (
        "counter",
        "Errors handled without raising (each also logged at WARNING or above).",
        ("component", "reason"),
        None,
    ),
}

_lock = threading.Lock()
_metrics: dict[str, Any] = {}
_failed: set[str] = set()  # metrics that could not be created in this process
_last_warned: dict[str, float] = {}


def _warn(key: str, message: str, *args: object) -> None:
    """A WARNING, at most once per `_WARN_EVERY_S` for `key`: a metric failing on every call must not flood the logs."""
    now = time.monotonic()
    last = _last_warned.get(key)
    if last is not None and now - last < _WARN_EVERY_S:
        return
    _last_warned[key] = now
    log.warning(message, *args)


def _create(name: str) -> Any:
    from ray.util import metrics as ray_metrics

    kind, description, tags, boundaries = _SPECS[name]
    if kind == "gauge":
        return ray_metrics.Gauge(name, description=description, tag_keys=tags)
    if kind == "counter":
        return ray_metrics.Counter(name, description=description, tag_keys=tags)
    return ray_metrics.Histogram(name, description=description, boundaries=list(boundaries or ()), tag_keys=tags)


def _metric(name: str) -> Any | None:
    """The metric object, created on first use; None outside Ray or when it could not be created."""
    found = _metrics.get(name)
    if found is not None or name in _failed:
        return found
    ray = sys.modules.get("ray")  # never imported here: a process without Ray (a pod's worker) stays without
    if ray is None or not ray.is_initialized():
        return None
    with _lock:
        found = _metrics.get(name)
        if found is not None:
            return found
        try:
            found = _metrics[name] = _create(name)
        except Exception as exc:
            _failed.add(name)
            failure = f"{type(exc).__name__}: {exc}"
        else:
            return found
    log.warning("metric %s could not be created (%s); it is not recorded in this process", name, failure)
    if name != _ERRORS:
        record_error("metrics", f"create_{name}")
    return None


_P = ParamSpec("_P")


def _safe(fn: Callable[_P, None]) -> Callable[_P, None]:
    """Never raise from a recording function: a failure is logged (rate-limited) and counted."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            _warn(fn.__name__, "metric %s failed: %s: %s", fn.__name__, type(exc).__name__, exc)
            if fn.__name__ != "record_error":
                record_error("metrics", fn.__name__)

    return wrapper


def _field(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


@_safe
def record_error(component: str, reason: str, count: int = 1) -> None:
    """Count errors that were handled and not raised; the caller logs each at WARNING or above.

    `reason` is a short fixed code (the site, e.g. `phase_sync`), never an exception's text: the
    tag's values must stay few.
    """
    counter = _metric(_ERRORS)
    if counter is not None and count > 0:
        counter.inc(count, tags={"component": component, "reason": reason})


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
def record_seconds_since_cycle(seconds: float) -> None:
    """The Scaler's watchdog, every second: how long ago the last cycle completed."""
    gauge = _metric("orchestrator_seconds_since_cycle")
    if gauge is not None:
        gauge.set(max(0.0, float(seconds)))


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
