"""Is the LogShipper stuck? A pure verdict from its `health()` figures, and the probe that acts on it.

The old system's health check said "healthy" while every batch failed. Here the verdict is a
function of facts (`assess(health, now, settings)`, no clock reads, unit-tested with plain dicts)
and the Scaler acts on it every cycle through `probe_and_heal`.

| what health() shows (or not)                                          | ok    | restart |
|-----------------------------------------------------------------------|-------|---------|
| no answer within `health_timeout_s`                                   | no    | yes     |
| the flusher thread is dead                                            | no    | yes     |
| one flush has been running longer than `stale_flush_alarm_s` (a hang) | no    | yes     |
| records wait and nothing was flushed for `stale_flush_alarm_s`, and   | no    | yes     |
|   no flush attempt failed meanwhile (stuck without saying why)        |       |         |
| records wait, flushes keep failing (database unreachable)             | no    | no (*)  |
| anything else                                                         | yes   | no      |

(*) it is retrying with backoff, the spool holds the records and the fallback shows them: a
restart would not help. The verdict is still not ok, and the probe writes it to the fallback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from config.settings import OrchestratorSettings
from telemetry import metrics
from telemetry.fallback import FallbackWriter

__all__ = ["Verdict", "assess", "probe_and_heal"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str
    restart: bool = False  # the probe should restart the LogShipper through Ray
    health: Mapping[str, Any] | None = None


def assess(health: Mapping[str, Any] | None, now: float, settings: OrchestratorSettings) -> Verdict:
    """The verdict on one probe: `health` is what health() returned, or None when it did not answer."""
    limit = settings.log_shipping.stale_flush_alarm_s
    if health is None:
        return Verdict(
            False, f"health() did not answer within {settings.log_shipping.health_timeout_s:g}s", restart=True
        )
    if health.get("flusher_alive") is False:
        return Verdict(False, "the flusher thread is dead", restart=True, health=health)
    flushing_since = health.get("flushing_since")
    if flushing_since is not None and now - float(flushing_since) > limit:
        return Verdict(
            False,
            f"one flush has been running for {now - float(flushing_since):.0f}s (limit {limit:g}s): hung",
            restart=True,
            health=health,
        )
    pending = int(health.get("records_pending") or 0)
    if pending > 0:
        # The last sign of progress: a flush, records starting to wait, or the (re)start.
        progress = max(float(health.get(key) or 0.0) for key in ("last_flush_at", "pending_since", "started_at"))
        idle = now - progress
        if idle > limit:
            failures = int(health.get("consecutive_failures") or 0)
            if failures > 0:
                return Verdict(
                    False,
                    f"{pending} records wait, nothing flushed for {idle:.0f}s; the database fails "
                    f"({failures} flushes in a row: {health.get('last_error')}); retrying with backoff",
                    restart=False,
                    health=health,
                )
            if flushing_since is not None:
                return Verdict(
                    False,
                    f"{pending} records wait, nothing flushed for {idle:.0f}s (limit {limit:g}s), and the current "
                    f"flush has been running for {now - float(flushing_since):.0f}s: hung",
                    restart=True,
                    health=health,
                )
            return Verdict(
                False,
                f"{pending} records wait and nothing was flushed for {idle:.0f}s (limit {limit:g}s) with no error",
                restart=True,
                health=health,
            )
    dropped = int(health.get("dropped_total") or 0)
    note = f"; {dropped} records dropped so far: {health.get('dropped')}" if dropped else ""
    return Verdict(True, f"ok: {pending} pending, {health.get('shipped', 0)} shipped{note}", health=health)


def probe_and_heal(
    handle: Any,
    settings: OrchestratorSettings,
    *,
    fallback: FallbackWriter | None = None,
    now: float | None = None,
) -> Verdict:
    """Call health() with a timeout, assess it, and restart the LogShipper through Ray when the verdict says so.

    A restart is written to the fallback (stderr and the JSON-lines file, which do not depend on the
    LogShipper) and counted in `orchestrator_log_shipper_restarts`. Never raises.
    """
    import ray

    health: Mapping[str, Any] | None
    try:
        health = ray.get(handle.health.remote(), timeout=settings.log_shipping.health_timeout_s)
    except Exception as exc:  # no answer: the verdict below says so (and restarts it)
        metrics.record_error("shipper_health", "no_answer")
        log.warning("LogShipper health probe failed: %s: %s", type(exc).__name__, exc)
        health = None
    verdict = assess(health, now if now is not None else time.time(), settings)
    metrics.record_log_shipper_health(health, ok=verdict.ok)
    if not verdict.restart:
        if not verdict.ok:
            _fallback(settings, fallback).alarm(f"LogShipper degraded: {verdict.reason}", source_id="scaler")
        return verdict
    _fallback(settings, fallback).alarm(
        f"LogShipper restarted by the health probe: {verdict.reason}",
        source_id="scaler",
        pid=(health or {}).get("pid"),
    )
    metrics.record_log_shipper_restart(_reason_tag(verdict.reason))
    try:
        ray.kill(handle, no_restart=False)
    except Exception as exc:
        metrics.record_error("shipper_health", "restart_failed")
        log.error("LogShipper restart failed: %s: %s", type(exc).__name__, exc)
        _fallback(settings, fallback).alarm(f"LogShipper restart failed: {type(exc).__name__}: {exc}")
        return Verdict(False, f"{verdict.reason}; restart failed: {exc}", restart=True, health=health)
    return verdict


def _reason_tag(reason: str) -> str:
    if "did not answer" in reason:
        return "no_answer"
    if "hung" in reason:
        return "flush_hung"
    if "flusher thread" in reason:
        return "flusher_dead"
    return "stale"


_writers: dict[str, FallbackWriter] = {}


def _fallback(settings: OrchestratorSettings, given: FallbackWriter | None) -> FallbackWriter:
    if given is not None:
        return given
    path = str(settings.log_shipping.fallback_file)
    writer = _writers.get(path)
    if writer is None:
        writer = _writers[path] = FallbackWriter(settings.log_shipping.fallback_file)
    return writer
