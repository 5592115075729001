"""Where a run's billed GPU-seconds go: busy, or which kind of idle (what the references do not pay).

`billed_breakdown(result, gap_s)` splits every pod's billed life (spawn request to the provider
confirming it gone, cut at the run's end) into parts that add up to the run's `billed_gpu_s`:

- `busy`: the pod held a task (overlapping runs of one pod counted once);
- `boot_used` / `boot_unused`: spawn request to first heartbeat, of pods that ran a task / of pods
  that never did (failed spawns included: they never heartbeat);
- `idle_unused`: the life after its heartbeat of a pod that never ran a task;
- `idle_before_first`: first heartbeat to its first task;
- `idle_gap_short` / `idle_gap_long`: idle between two of its tasks, a gap of at most `gap_s` /
  longer (the clairvoyant `oracle` keeps only gaps a new pod would cost more than, about a boot:
  with `gap_s` a boot, the long gaps are what it would have given up for a fresh pod);
- `idle_after_last`: its last task's end to the policy's drain request (or to its end if never
  drained: a pod kept idle into the run's tail);
- `release`: drain request (or last task's end, if later) to gone.

The oracle's plan pays `busy`, one boot per start and the short gaps it keeps; everything else is
what a policy pays for not knowing the future.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from sim.results import PodLife, SimResult

__all__ = ["PARTS", "billed_breakdown", "pod_breakdown"]

PARTS = (
    "busy",
    "boot_used",
    "boot_unused",
    "idle_unused",
    "idle_before_first",
    "idle_gap_short",
    "idle_gap_long",
    "idle_after_last",
    "release",
)


def _merged(runs: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The stretches a pod held at least one task, from its (start, end) runs."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(runs):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def pod_breakdown(pod: PodLife, gap_s: float) -> dict[str, float]:
    """One pod's billed seconds by part (`PARTS`); they add up to `gone_at - created_at`."""
    parts = dict.fromkeys(PARTS, 0.0)
    if pod.promoted_at is None:
        parts["boot_unused"] = pod.gone_at - pod.created_at
        return parts
    busy = _merged(pod.runs)
    if not busy:
        parts["boot_unused"] = pod.promoted_at - pod.created_at
        parts["idle_unused"] = pod.gone_at - pod.promoted_at
        return parts
    parts["boot_used"] = pod.promoted_at - pod.created_at
    parts["idle_before_first"] = busy[0][0] - pod.promoted_at
    for (_, end), (start, _) in pairwise(busy):
        parts["idle_gap_short" if start - end <= gap_s else "idle_gap_long"] += start - end
    parts["busy"] = sum(end - start for start, end in busy)
    last = busy[-1][1]
    drained = pod.scaled_down_at if pod.scaled_down_at is not None else pod.gone_at
    stop = min(max(drained, last), pod.gone_at)
    parts["idle_after_last"] = stop - last
    parts["release"] = pod.gone_at - stop
    return parts


def billed_breakdown(result: SimResult, gap_s: float) -> dict[str, float]:
    """Every pod's billed seconds by part (`PARTS`), summed over the run; they add up to its billed time."""
    total = dict.fromkeys(PARTS, 0.0)
    for pod in result.pods:
        for part, seconds in pod_breakdown(pod, gap_s).items():
            total[part] += seconds
    return total
