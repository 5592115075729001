"""What a simulation run produced: its figures, a per-cycle timeline, the waits and the reasons.

Kept apart from the engine so readers of results (the `orchestrator simulate` printer and plot,
the benchmarks) need not know how a run is driven.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Figures", "SimResult", "percentile"]

# figure name -> value; the names are listed in `sim.engine` (`_Sim._result`).
Figures = dict[str, float | int]


@dataclass
class SimResult:
    policy: str
    figures: Figures
    timeline: list[dict[str, float | int]]  # one row per policy cycle
    waits: list[tuple[float, float]]  # (claimed_at, wait_s) per first claim
    reasons: list[tuple[float, str]]  # (t, reason) of decisions that changed something
    runs: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of every task run on a pod

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
