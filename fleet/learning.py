"""What the scaling policy learns from what it sees, cycle after cycle. Pure: no clock, no I/O.

Two things are learned, both kept in `FleetHistory.learned` (a `DemandMemory`):

- **How demand rises.** Demand (claimable + in progress on capacity) is remembered as change points
  over the last `DEMAND_MEMORY_S`. `headroom` answers: in the remembered past, at moments like now
  (as long since demand last rose), by how much did demand rise within the next boot time, at the
  `HEADROOM_QUANTILE`? That many idle workers are worth keeping: fewer and the next rise waits a
  boot; more and they idle for nothing. It replaces a fixed idle timeout: after a burst, when
  demand has not risen for a while and rarely did at such moments, idle workers go at once; in a
  steady stream, one or two stay. (The clairvoyant plan of `sim.oracle` keeps exactly the idle
  gaps that end within a boot time; this is the online estimate of which those are.)
- **How long tasks run, per task type** (from `WorkerView.task_started_at` / `task_type`: a task
  ended when its worker went idle or started another). `capacity_on_its_way` counts busy workers
  whose task ends, at `COMING_CONFIDENCE`, before a new pod would likely boot (the policy passes
  the horizon): a queued task will be claimed by one of them first, so spawning for it only buys
  an idle pod. Not for task types that run shorter than a boot (a stream of them needs the pod).

A restarted Scaler rebuilds the demand memory from the decisions it reads back
(`memory_from_decisions`, the demand each recorded decision saw); task durations are learned again
within a few tasks. Until enough is remembered (`MIN_MEMORY_S`), `headroom` is None and the policy
keeps its fixed rule.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from fleet.models import DemandMemory, WorkerState, WorkerView

__all__ = [
    "COMING_CONFIDENCE",
    "COMING_HORIZON_SHARE",
    "DEMAND_MEMORY_S",
    "HEADROOM_QUANTILE",
    "MAX_POINTS",
    "MIN_ACTIVE_BEFORE_DRAIN_S",
    "capacity_on_its_way",
    "headroom",
    "memory_from_decisions",
    "observe",
]

# Demand change points are remembered this long: two hours hold several bursts of the shipped
# traces and a good part of a diurnal rise, and cost a few thousand floats at most.
DEMAND_MEMORY_S = 7200.0
# Most change points kept, whatever the horizon (a Scaler woken by every task change sees many).
MAX_POINTS = 4000
# Demand is sampled on this grid to weigh every moment alike (a burst has many change points but
# is a short time).
GRID_S = 10.0
# No learned headroom before this much demand has been remembered (beyond one boot window).
MIN_MEMORY_S = 600.0
# The rise within a boot time kept as headroom: at 0.9, one rise in ten finds no idle worker.
HEADROOM_QUANTILE = 0.9
# Fewer samples than this in the bucket of "as long since the last rise" and all samples are used.
MIN_BUCKET_SAMPLES = 20
# Task runs remembered per type, and the fewest that make a duration estimate.
DURATION_SAMPLES_KEPT = 50
MIN_DURATION_SAMPLES = 5
MAX_TASK_TYPES = 32
# A busy worker counts as capacity on its way when its task ends within the horizon with at least
# this probability (0.8 kept more queued tasks waiting past the p95 wait of the fixed rules).
COMING_CONFIDENCE = 0.95
# The horizon: this share of the way from the fastest boot seen to the median boot. At 0 (the fastest
# boot) the waits stay short but little is saved; at 1 (the median) the diurnal p95 wait grew ~10 s.
COMING_HORIZON_SHARE = 0.5
# No worker is drained sooner than this after its promotion (the 17:59 kill came a minute after a
# 2.5 minute boot).
MIN_ACTIVE_BEFORE_DRAIN_S = 120.0


def observe(memory: DemandMemory, demand: int, workers: Sequence[WorkerView], now: float) -> DemandMemory:
    """The memory after this cycle: demand recorded if it changed, task runs that ended learned."""
    points = list(memory.points)
    if not points or points[-1][1] != demand:
        if points and points[-1][0] >= now:
            points[-1] = (points[-1][0], demand)
        else:
            points.append((now, demand))
    cut = now - DEMAND_MEMORY_S
    # keep the last point before the cut: it says what demand was at the start of the horizon
    start = max(0, bisect.bisect_left(points, (cut, -1)) - 1)
    points = points[max(start, len(points) - MAX_POINTS) :]

    durations = {task_type: list(samples) for task_type, samples in memory.durations}
    seen = {wid: (started, task_type) for wid, started, task_type in memory.holding}
    holding: list[tuple[str, float, str]] = []
    for w in workers:
        before = seen.get(w.id)
        busy = w.tasks_in_progress > 0 and w.task_started_at is not None and w.task_type is not None
        if before is not None:
            started, task_type = before
            ended: float | None = None
            if busy and w.task_started_at is not None and w.task_started_at > started:
                ended = w.task_started_at  # it took another task: the one seen before ended then
            elif w.tasks_in_progress == 0 and w.idle_since is not None and w.idle_since >= started:
                ended = w.idle_since
            if ended is not None:
                samples = durations.setdefault(task_type, [])
                samples.append(ended - started)
                del samples[:-DURATION_SAMPLES_KEPT]
        if busy and w.task_started_at is not None and w.task_type is not None and not w.state.is_terminal():
            holding.append((w.id, w.task_started_at, w.task_type))
    kept = sorted(durations.items(), key=lambda kv: kv[0])[:MAX_TASK_TYPES]
    return DemandMemory(
        points=tuple(points),
        durations=tuple((task_type, tuple(samples)) for task_type, samples in kept),
        holding=tuple(sorted(holding)),
    )


def _bucket(since: float | None, window_s: float) -> int:
    """Moments alike: demand rose within a boot time, within three, within ten, or longer ago."""
    if since is None:
        return 3
    if since < window_s:
        return 0
    if since < 3 * window_s:
        return 1
    if since < 10 * window_s:
        return 2
    return 3


def headroom(memory: DemandMemory, now: float, window_s: float) -> int | None:
    """Idle workers worth keeping: the learned rise of demand within `window_s` (see the module doc).

    None until the memory spans `window_s + MIN_MEMORY_S`.
    """
    points = memory.points
    if not points:
        return None
    start = max(points[0][0], now - DEMAND_MEMORY_S)
    steps = int((now - start) // GRID_S)
    if steps * GRID_S < window_s + MIN_MEMORY_S:
        return None
    grid: list[int] = []
    j = 0
    for k in range(steps + 1):
        t = start + k * GRID_S
        while j + 1 < len(points) and points[j + 1][0] <= t:
            j += 1
        grid.append(points[j][1])
    since: list[float | None] = []
    last_rise: int | None = None
    for k in range(len(grid)):
        if k > 0 and grid[k] > grid[k - 1]:
            last_rise = k
        since.append(None if last_rise is None else (k - last_rise) * GRID_S)
    width = max(1, round(window_s / GRID_S))
    rises: dict[int, list[int]] = {0: [], 1: [], 2: [], 3: []}
    window: deque[int] = deque()  # indexes of a decreasing run: the max of grid[k .. k + width]
    for k in range(len(grid) - 1, -1, -1):
        while window and grid[window[-1]] <= grid[k]:
            window.pop()
        window.append(k)
        while window[0] > k + width:
            window.popleft()
        if k + width < len(grid):
            rises[_bucket(since[k], window_s)].append(grid[window[0]] - grid[k])
    alike = rises[_bucket(since[-1], window_s)]
    if len(alike) < MIN_BUCKET_SAMPLES:
        alike = [r for samples in rises.values() for r in samples]
    if not alike:
        return None
    alike.sort()
    return alike[min(len(alike) - 1, math.ceil(HEADROOM_QUANTILE * len(alike)) - 1)]


def _ends_within(samples: Sequence[float], elapsed: float, horizon_s: float) -> float:
    """P(a run ends within `horizon_s` | it has run `elapsed`), from remembered runs; 0 if unknown."""
    longer = [d for d in samples if d > elapsed]
    if len(samples) < MIN_DURATION_SAMPLES or not longer:
        return 0.0  # never seen one run this long: no promise it ends soon
    return sum(1 for d in longer if d <= elapsed + horizon_s) / len(longer)


def capacity_on_its_way(
    memory: DemandMemory, workers: Sequence[WorkerView], now: float, horizon_s: float, min_run_s: float = 0.0
) -> list[str]:
    """Active busy workers whose task ends within `horizon_s` at `COMING_CONFIDENCE` (see module doc).

    Tasks of a type whose median run is shorter than `min_run_s` (the policy passes the fastest
    boot) promise nothing: a pod started for a stream of such tasks serves many of them in its
    life, and waiting for busy workers instead held every task of the stream back (the p95 wait of
    short dense tasks went from 11 s to 35 s in the simulator).
    """
    durations = dict(memory.durations)
    out = []
    for w in workers:
        if w.state is not WorkerState.ACTIVE or w.tasks_in_progress != 1:
            continue
        if w.task_started_at is None or w.task_type is None:
            continue
        samples = durations.get(w.task_type, ())
        if samples and sorted(samples)[len(samples) // 2] < min_run_s:
            continue
        p = _ends_within(samples, now - w.task_started_at, horizon_s)
        if p >= COMING_CONFIDENCE:
            out.append(w.id)
    return sorted(out)


def memory_from_decisions(rows: Iterable[tuple[float, Mapping[str, object]]], now: float) -> DemandMemory:
    """The demand memory rebuilt from recorded decisions `(at, inputs)`, as a restarted Scaler reads them.

    The demand of a decision is `claimable + in_progress_on_capacity` of its inputs; rows without
    them are skipped. Demand between two recorded decisions is taken as the earlier one's.
    """
    points: list[tuple[float, int]] = []
    for at, inputs in sorted(rows, key=lambda r: r[0]):
        claimable, on_capacity = inputs.get("claimable"), inputs.get("in_progress_on_capacity")
        if not isinstance(claimable, int | float) or not isinstance(on_capacity, int | float):
            continue
        if at > now or at < now - DEMAND_MEMORY_S:
            continue
        demand = int(claimable) + int(on_capacity)
        if not points or points[-1][1] != demand:
            points.append((at, demand))
    return DemandMemory(points=tuple(points[-MAX_POINTS:]))
