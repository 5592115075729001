"""Trace time to demo time: the speed that fits a trace into `--duration`, and the demo's settings.

Task durations and gaps between arrivals shrink by the speed, and so do the policy's time knobs
(with floors of a few Scaler cycles); pod boot time does not (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim.trace import TraceTask

__all__ = ["DEFAULT_TRACE", "demo_overrides", "fit_speed", "task_duration_s"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRACE = PROJECT_ROOT / "bench" / "traces" / "demo.csv"
# Share of --duration given to replaying the trace; the rest lets the fleet finish and scale down.
_REPLAY_SHARE = 0.75
# Slowest a compressed task may be made to run (s): keeps a too-low --speed from stalling the demo.
_MIN_TASK_S = 0.05
# The demo's Scaler cycle (s); time knobs are never made shorter than a few cycles.
_DEMO_CYCLE_S = 1.0


def fit_speed(rows: Sequence[TraceTask], duration_s: float) -> float:
    """The compression that replays the trace (first arrival to last finish) in the replay share."""
    first = min(r.arrival_s for r in rows)
    end = max(r.arrival_s + r.duration_s for r in rows)
    return max(1.0, (end - first) / max(1.0, duration_s * _REPLAY_SHARE))


def task_duration_s(trace_duration_s: float, speed: float) -> float:
    """How long a task of the trace runs in the demo (the worker's `duration_s` parameter)."""
    return round(max(_MIN_TASK_S, trace_duration_s / speed), 3)


def _compressed(production_s: float, speed: float, floor_s: float) -> float:
    """A production time knob in demo time: divided by the speed, never below `floor_s`."""
    return round(max(floor_s, production_s / speed), 1)


def demo_overrides(
    state_dir: Path, speed: float = 30.0, *, profile: str = "native", use_database_url: bool = False
) -> dict[str, Any]:
    """Settings for a fast, local demo: absolute paths under `state_dir`, quick cycles, and the
    policy's time knobs compressed by `speed` like the trace (see the package docstring).

    `use_database_url` keeps DATABASE_URL (a copy of the user's own database) instead of the
    embedded one. The `reigh` profile keeps its state (embedded database, spool) in
    `state_dir/reigh`, apart from the native demo's, and its pods run the Headless-Wan2GP stand-in.

    The value is the nested mapping `config.load_settings(overrides=...)` takes (sections of
    str, float, int and None values), hence `Any`."""
    from config.settings import ScalingSettings

    state = state_dir.resolve() / "reigh" if profile == "reigh" else state_dir.resolve()
    prod = ScalingSettings()
    database: dict[str, Any] = {"supabase_url": None, "embedded_dir": str(state / "pgdata")}
    if use_database_url:
        database["backend"] = "postgres"  # said, not guessed: DATABASE_URL is the demo's database
    else:
        database |= {"backend": "embedded", "url": None}
    provider: dict[str, Any] = {"kind": "local", "local_boot_delay_s": 1.0}
    if profile == "reigh":
        # The stand-in heartbeats and polls as the real worker does (every 20 s and 10 s), faster.
        provider["template"] = {"extra_env": {"REIGH_HEARTBEAT_INTERVAL_S": "1", "REIGH_POLL_INTERVAL_S": "0.3"}}
    return {
        "state_dir": str(state),
        "lease_ttl_s": 10.0,
        "database": database,
        "queue": {"profile": profile},
        # Pods are local processes: their boot (Python, imports, first heartbeat) is real, ~5 s.
        "provider": provider,
        "scaling": {
            "min_workers": 0,
            "max_workers": 4,
            "cycle_interval_s": _DEMO_CYCLE_S,
            "spawn_timeout_s": 60.0,
            "heartbeat_interval_s": 1.0,
            "heartbeat_timeout_s": 15.0,
            "idle_timeout_s": _compressed(prod.idle_timeout_s, speed, 3 * _DEMO_CYCLE_S),
            "drain_timeout_s": _compressed(prod.drain_timeout_s, speed, 10 * _DEMO_CYCLE_S),
            "scale_down_stabilization_s": _compressed(prod.scale_down_stabilization_s, speed, 2 * _DEMO_CYCLE_S),
            # An expectation of a real boot, so not compressed; measured boots replace it at once.
            "default_boot_time_s": 6.0,
            "breaker_cooldown_s": _compressed(prod.breaker_cooldown_s, speed, 10 * _DEMO_CYCLE_S),
            # Else the breaker of one run counts the spawns of the runs before it.
            "failure_window_s": _compressed(prod.failure_window_s, speed, 30 * _DEMO_CYCLE_S),
        },
        "log_shipping": {
            "spool_dir": str(state / "spool"),
            "fallback_file": str(state / "logs" / "fallback.jsonl"),
            "dead_letter_file": str(state / "logs" / "dead-letter.jsonl"),
            "flush_interval_s": 0.5,
        },
        "worker": {"poll_interval_s": 0.2, "shutdown_grace_s": 5.0},
    }
