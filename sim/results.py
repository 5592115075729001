"""What a simulation run produced: its figures, a per-cycle timeline, the waits and the reasons.

Kept apart from the engine so readers of results (the `orchestrator simulate` printer and plot,
the benchmarks) need not know how a run is driven.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Figures", "PodLife", "SimResult", "percentile"]

# figure name -> value; the names are listed in `sim.engine` (`_Sim._result`).
Figures = dict[str, float | int]


@dataclass(frozen=True, slots=True)
class PodLife:
    """One pod of a run: billed from `created_at` to `gone_at` (the run's end if it outlived it)."""

    id: str
    created_at: float
    promoted_at: float | None  # first heartbeat; None if it never became active
    scaled_down_at: float | None  # the policy asked it to drain
    gone_at: float
    runs: tuple[tuple[float, float], ...]  # (start, end) of the task runs it held, by start


@dataclass
class SimResult:
    policy: str
    figures: Figures
    timeline: list[dict[str, float | int]]  # one row per policy cycle
    waits: list[tuple[float, float]]  # (claimed_at, wait_s) per first claim
    reasons: list[tuple[float, str]]  # (t, reason) of decisions that changed something
    runs: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of every task run on a pod
    pods: list[PodLife] = field(default_factory=list)  # every pod spawned, for `sim.waste`

    def as_dict(self) -> dict[str, str | Figures]:
        return {"policy": self.policy, "figures": self.figures}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence; 0 for an empty one."""
    if not values:
        return 0.0
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
