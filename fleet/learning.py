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
  ended when its worker went idle or started another), and **since when each claimable task
  waits** (`queue_ages`, FIFO). `project_queue` sends the claimable tasks that find no idle or
  booting worker to the busy workers as their tasks end: the k-th such task is served when, with
  probability >= `PROJECTION_CONFIDENCE`, k busy workers free before it has waited the horizon (the
  policy passes how long a new pod would likely take); it will be claimed by one of them first, so
  spawning for it only buys an idle pod. Several busy workers each unlikely to free soon together
  free one surely. Not for task types that run shorter than a boot (a stream of them needs the pod).

A restarted Scaler rebuilds the demand memory and the queued tasks' waits from the decisions it
reads back (`memory_from_decisions`, the demand and claimable count each recorded decision saw);
task durations are learned again within a few tasks. Until enough is remembered (`MIN_MEMORY_S`),
`headroom` is None and the policy keeps its fixed rule.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fleet.models import DemandMemory, WorkerState, WorkerView

__all__ = [
    "COMING_HORIZON_SHARE",
    "DEMAND_MEMORY_S",
    "HEADROOM_QUANTILE",
    "MAX_POINTS",
    "MIN_ACTIVE_BEFORE_DRAIN_S",
    "PROJECTION_CONFIDENCE",
    "PROJECTION_MAX_WORKERS",
    "QueueProjection",
    "headroom",
    "memory_from_decisions",
    "observe",
    "project_queue",
    "queue_ages",
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
# The horizon: this share of the way from the fastest boot seen to the median boot. At 0 (the fastest
# boot) the waits stay short but little is saved; at 1 (the median) the diurnal p95 wait grew 5-8 s.
COMING_HORIZON_SHARE = 0.5
# The k-th queued task waits for busy workers when k of them free within its horizon with at least
# this probability (from the learned durations). Diurnal trace, 8 seeds, billed/busy at p95 wait:
# 0.9 1.500 at 97.4 s, 0.95 1.511 at 98.0 s (`previous` 1.621 at 99.1 s); 0.8 saves more at a
# longer p95 wait.
PROJECTION_CONFIDENCE = 0.9
# Most busy workers a queue projection weighs (the likeliest to free): bounds a cycle's work.
PROJECTION_MAX_WORKERS = 64
# Most claimable tasks whose waiting time is tracked (the youngest are the ones a projection weighs).
MAX_QUEUE_TRACKED = 1000
# No worker is drained sooner than this after its promotion (the 17:59 kill came a minute after a
# 2.5 minute boot).
MIN_ACTIVE_BEFORE_DRAIN_S = 120.0


def queue_ages(queued_since: Sequence[float], claimable: int, now: float) -> tuple[float, ...]:
    """When each of `claimable` tasks became claimable, oldest first, from last cycle's record.

    Claims take the oldest (FIFO), so fewer claimable tasks drop the oldest; more add tasks seen now.
    """
    kept = list(queued_since[max(0, len(queued_since) - claimable) :])
    kept += [now] * (claimable - len(kept))
    return tuple(kept[-MAX_QUEUE_TRACKED:])


def observe(
    memory: DemandMemory, demand: int, workers: Sequence[WorkerView], now: float, claimable: int | None = None
) -> DemandMemory:
    """The memory after this cycle: demand recorded if it changed, task runs that ended learned, and
    (given the claimable count) since when each claimable task waits."""
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
        queued_since=memory.queued_since if claimable is None else queue_ages(memory.queued_since, claimable, now),
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


@dataclass(frozen=True, slots=True)
class QueueProjection:
    """Where the claimable tasks that find no free or booting worker are projected to start.

    `waiting` such tasks (FIFO) go to the busy workers as they free; `served` of them start on a
    freed worker within `horizon_s` with probability >= `confidence` (the `served`-th earliest end
    among `freeing`, from the learned durations); the other `need` start sooner on a new pod.
    """

    waiting: int
    served: int
    freeing: tuple[str, ...]  # busy workers whose task may end within the horizon
    horizon_s: float
    confidence: float

    @property
    def need(self) -> int:
        return self.waiting - self.served


def _at_least(probabilities: Sequence[float], k: int) -> float:
    """P(at least k of independent events happen); counts above k are pooled, so O(len * k)."""
    counts = [1.0] + [0.0] * k  # counts[j]: P(exactly j so far), counts[k]: P(k or more)
    for p in probabilities:
        counts[k] += counts[k - 1] * p if k > 0 else 0.0
        for j in range(k - 1, 0, -1):
            counts[j] = counts[j] * (1.0 - p) + counts[j - 1] * p
        counts[0] *= 1.0 - p
    return counts[k] if k > 0 else 1.0


def project_queue(
    memory: DemandMemory,
    workers: Sequence[WorkerView],
    now: float,
    waiting: int,
    horizon_s: float,
    min_run_s: float = 0.0,
    confidence: float = PROJECTION_CONFIDENCE,
    waited: Sequence[float] = (),
) -> QueueProjection:
    """How many of `waiting` queued tasks busy workers take within `horizon_s` (see `QueueProjection`).

    Each active worker busy with one task frees within the horizon with the learned probability
    (`_ends_within`; 0 for a type seen fewer than `MIN_DURATION_SAMPLES` times or never run this
    long); the ends are taken as independent. The k-th waiting task is served when at least k
    workers free within the horizon with probability >= `confidence`: several busy workers each
    unlikely to free soon together free one surely. Task types whose median run is shorter than
    `min_run_s` promise nothing: a pod started for a stream of such tasks serves many of them in its
    life, and waiting for busy workers instead held every task of the stream back (the p95 wait of
    short dense tasks went from 11 s to 35 s in the simulator).
    """
    durations = dict(memory.durations)
    # (chance of freeing within the horizon, worker, its type's runs, how long it has run)
    runs: list[tuple[float, str, Sequence[float], float]] = []
    for w in workers:
        if w.state is not WorkerState.ACTIVE or w.tasks_in_progress != 1:
            continue
        if w.task_started_at is None or w.task_type is None:
            continue
        samples = durations.get(w.task_type, ())
        if samples and sorted(samples)[len(samples) // 2] < min_run_s:
            continue
        chance = _ends_within(samples, now - w.task_started_at, horizon_s)
        if chance > 0.0:
            runs.append((chance, w.id, samples, now - w.task_started_at))
    # Only the workers likeliest to free weigh in: fewer workers free fewer tasks, so the cut only ever
    # spawns more, and it bounds the work of a cycle in a large fleet.
    runs = sorted(runs, key=lambda r: (-r[0], r[1]))[:PROJECTION_MAX_WORKERS]
    chances: dict[float, list[float]] = {}  # per horizon left: each worker's chance of freeing within it
    served = 0
    # The k-th waiting task (oldest first) is served if k workers free before it has waited the horizon.
    while served < min(waiting, len(runs)):
        left = horizon_s - (waited[served] if served < len(waited) else 0.0)
        if left <= 0:
            break
        if left not in chances:
            chances[left] = [_ends_within(samples, elapsed, left) for _, _, samples, elapsed in runs]
        if _at_least(chances[left], served + 1) < confidence:
            break
        served += 1
    return QueueProjection(
        waiting=max(0, waiting),
        served=served,
        freeing=tuple(sorted(wid for _, wid, _, _ in runs)),
        horizon_s=horizon_s,
        confidence=confidence,
    )


def memory_from_decisions(rows: Iterable[tuple[float, Mapping[str, object]]], now: float) -> DemandMemory:
    """The demand memory rebuilt from recorded decisions `(at, inputs)`, as a restarted Scaler reads them.

    The demand of a decision is `claimable + in_progress_on_capacity` of its inputs; rows without
    them are skipped. Demand between two recorded decisions is taken as the earlier one's; the
    claimable counts replayed through `queue_ages` say since when the queued tasks wait.
    """
    points: list[tuple[float, int]] = []
    queued_since: tuple[float, ...] = ()
    for at, inputs in sorted(rows, key=lambda r: r[0]):
        claimable, on_capacity = inputs.get("claimable"), inputs.get("in_progress_on_capacity")
        if not isinstance(claimable, int | float) or not isinstance(on_capacity, int | float):
            continue
        if at > now or at < now - DEMAND_MEMORY_S:
            continue
        demand = int(claimable) + int(on_capacity)
        if not points or points[-1][1] != demand:
            points.append((at, demand))
        queued_since = queue_ages(queued_since, int(claimable), at)
    return DemandMemory(points=tuple(points[-MAX_POINTS:]), queued_since=queued_since)
