"""What a simulation run produced: its figures, a per-cycle timeline, the waits and the reasons.

Kept apart from the engine so readers of results (the `orchestrator simulate` printer and plot,
the benchmarks) need not know how a run is driven.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Figures", "GpuStint", "PodLife", "SimResult", "percentile"]

# figure name -> value; the names are listed in `sim.engine` (`_Sim._result`).
Figures = dict[str, float | int]


@dataclass(frozen=True, slots=True)
class GpuStint:
    """A stretch of a pod's life with its GPU billed: from its spawn (or a resume) request to the
    provider confirming it stopped (parked in the warm pool, or a resume refused) or gone."""

    start: float
    promoted_at: float | None  # first heartbeat within it; None if it never became active in it
    scaled_down_at: float | None  # the policy asked it to drain (or park) within it
    end: float
    resumed: bool  # started by a resume, not by the spawn


@dataclass(frozen=True, slots=True)
class PodLife:
    """One pod of a run: alive from `created_at` to `gone_at` (the run's end if it outlived it).

    Its GPU is billed during its `stints`; between them (and after the last, if that ended in a
    stop) it sits stopped, billed `stopped_cost_share` GPU-seconds per second for its disk. No
    stints given: one, the whole life (a pod never stopped). `promoted_at` and `scaled_down_at` are
    its first stint's.
    """

    id: str
    created_at: float
    promoted_at: float | None  # first heartbeat; None if it never became active
    scaled_down_at: float | None  # the policy asked it to drain
    gone_at: float
    runs: tuple[tuple[float, float], ...]  # (start, end) of the task runs it held, by start
    stints: tuple[GpuStint, ...] = ()
    stopped_cost_share: float = 0.0

    def gpu_stints(self) -> tuple[GpuStint, ...]:
        if self.stints:
            return self.stints
        return (GpuStint(self.created_at, self.promoted_at, self.scaled_down_at, self.gone_at, resumed=False),)

    @property
    def gpu_s(self) -> float:
        """Seconds its GPU was billed."""
        return sum(s.end - s.start for s in self.gpu_stints())

    @property
    def stopped_s(self) -> float:
        """Seconds it sat stopped (its disk billed, not its GPU)."""
        return (self.gone_at - self.created_at) - self.gpu_s

    @property
    def billed_gpu_s(self) -> float:
        """What it cost in GPU-seconds: its GPU time, and its stopped time at the disk's share."""
        return self.gpu_s + self.stopped_cost_share * self.stopped_s


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
