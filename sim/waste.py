"""Where a run's billed GPU-seconds go: busy, or which kind of idle (what the references do not pay).

`billed_breakdown(result, gap_s)` splits every pod's billed life (spawn request to the provider
confirming it gone, cut at the run's end) into parts that add up to the run's `billed_gpu_s`. A pod
parked in the warm pool has several stints with its GPU billed (`sim.results.GpuStint`: spawn or
resume request to the confirmed stop or gone); each stint is split like a whole pod's life, and
the time between them is the pod's `stopped` disk:

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
- `release`: drain request (or last task's end, if later) to gone (or, parked, to stopped);
- `resume_used` / `resume_unused`: resume request to the first heartbeat after it, of resumed stints
  that ran a task / that did not (refused resumes included);
- `stopped`: its stopped time at `stopped_cost_share` (the disk billed while the GPU is not).

The oracle's plan pays `busy`, one boot per start and the short gaps it keeps; everything else is
what a policy pays for not knowing the future.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from sim.results import GpuStint, PodLife, SimResult

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
    "resume_used",
    "resume_unused",
    "stopped",
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


def _stint_breakdown(
    stint: GpuStint, runs: Sequence[tuple[float, float]], gap_s: float, parts: dict[str, float]
) -> None:
    """Add one stint's billed seconds by part to `parts`; `runs` are the task runs held within it."""
    used, unused = ("resume_used", "resume_unused") if stint.resumed else ("boot_used", "boot_unused")
    if stint.promoted_at is None:
        parts[unused] += stint.end - stint.start
        return
    busy = _merged(runs)
    if not busy:
        parts[unused] += stint.promoted_at - stint.start
        parts["idle_unused"] += stint.end - stint.promoted_at
        return
    parts[used] += stint.promoted_at - stint.start
    parts["idle_before_first"] += busy[0][0] - stint.promoted_at
    for (_, end), (start, _) in pairwise(busy):
        parts["idle_gap_short" if start - end <= gap_s else "idle_gap_long"] += start - end
    parts["busy"] += sum(end - start for start, end in busy)
    last = busy[-1][1]
    drained = stint.scaled_down_at if stint.scaled_down_at is not None else stint.end
    stop = min(max(drained, last), stint.end)
    parts["idle_after_last"] += stop - last
    parts["release"] += stint.end - stop


def pod_breakdown(pod: PodLife, gap_s: float) -> dict[str, float]:
    """One pod's billed seconds by part (`PARTS`); they add up to its `billed_gpu_s`."""
    parts = dict.fromkeys(PARTS, 0.0)
    for stint in pod.gpu_stints():
        # A run starts and ends within the stint that held the pod's GPU then.
        held = [run for run in pod.runs if stint.start <= run[0] <= stint.end]
        _stint_breakdown(stint, held, gap_s, parts)
    parts["stopped"] = pod.stopped_cost_share * pod.stopped_s
    return parts


def billed_breakdown(result: SimResult, gap_s: float) -> dict[str, float]:
    """Every pod's billed seconds by part (`PARTS`), summed over the run; they add up to its billed time."""
    total = dict.fromkeys(PARTS, 0.0)
    for pod in result.pods:
        for part, seconds in pod_breakdown(pod, gap_s).items():
            total[part] += seconds
    return total
