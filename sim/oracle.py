"""Clairvoyant references: what the best possible fleet would pay for a trace, to measure policies against.

A policy decides online: it does not know when the next task comes, how long a task runs or how
long the next pod will boot. The references below know all of it (the trace, and, for the pods,
the same seeded world `sim.engine` draws). Four references (`reference_figures`): `bound`,
`oracle`, `oracle-warm` and `oracle-p95`.

**`bound` = `zero_wait_bound(...)`, a lower bound.** The least billed GPU-seconds of *any* fleet that serves the
trace at the least wait the world allows: every task started as soon as its arrival, its parent
and its user's concurrency limit let it, with at most `max_workers` pods (the schedule of
`max_workers` always-ready pods, FIFO like the engine: `earliest_schedule`; with no limit binding
every wait is 0). Its pod need over time is `ceil(running tasks / tasks_per_worker)`; cut into
layers (layer k is busy while the need is >= k), each layer pays its busy time, one pod start when
it is first used, and for each idle gap the gap or a new pod start, whichever is smaller. A pod
start is priced at the *fastest* boot the world can draw (`boot_floor_s`: the low end of the boot
distribution) plus the shortest time a released pod is still billed (`terminate_delay_s`), and a
fleet that needs U starts also pays, at the least, a cancel for every failed spawn the seeded
world puts before its U-th good pod.

Why no fleet pays less for the same task runs (`layered_bound` holds for every run, whatever its
waits, applied to the runs it made): let A(t) be the number of pods between their first heartbeat
and the end of their last task. A(t) >= need(t) at every t, so for each layer k the time with
A >= k covers the layer's busy time; in each gap of layer k either A >= k all along (the gap is
paid) or A fell below k and had to come back up by the gap's end; A rises only when a pod becomes
active, each pod's rise crosses one layer once, and each such pod was billed its boot before (at
least `boot_floor_s`) and `terminate_delay_s` after. The first use of a layer needs a rise too.
Summing over layers gives the bound; choosing which gaps to bridge is then a sort (the largest gaps
are the ones worth a new pod). At the least wait, every run's task runs are exactly the schedule's,
so no policy beats `zero_wait_bound` at that wait.

**`oracle` = `zero_wait_bound(..., drawn=True)`, the clairvoyant zero-wait plan.** The same
layering with each start priced at the boot the world draws for it, in spawn order
(`start_costs(drawn=True)`): a clairvoyant knows each pod's boot but, like any policy, cannot pick
its pods. A plan a clairvoyant fleet could carry out (give or take the cycle and poll
granularity), not a bound: the reference the default policy's gap is measured to.

**`oracle-warm` = `warm_layered(...)`, the clairvoyant zero-wait plan with a warm pool.** The
world may stop a pod and resume it later (`SimParams.resume`, `resume_error_rate`, `stop_delay_s`,
`stopped_cost_share`): each idle gap is then paid idle, parked (stop, disk while stopped, a resume)
or bridged by a new pod, whichever is cheapest. The reference to measure a policy that uses the
warm pool against in the same world: `oracle` knows no warm pool, so such a policy can close more
than its whole gap to it.

**`oracle-p95` = `clairvoyant_plan(trace, ..., wait_p95_s)`, the plan at a given wait.** Allowed a
p95 wait, a clairvoyant fleet can let a task wait for a pod that frees soon instead of starting
one. The plan is the cheapest of a family of such schedules (a task waits if a running task ends
within `hold_s` of its readiness; at most `cap` pods), priced like `oracle`, among those whose p95
wait is within the budget. An approximation from above of the optimum at that wait (a feasible
schedule, so the true optimum at that wait is no dearer), not a bound on what policies pay there.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from config.settings import ScalingSettings
from sim.engine import SimParams
from sim.results import Figures, percentile
from sim.trace import TraceTask

__all__ = [
    "REFERENCE_NAMES",
    "Bound",
    "Schedule",
    "clairvoyant_plan",
    "earliest_schedule",
    "gap_closed",
    "layered_bound",
    "need_profile",
    "reference_figures",
    "schedule",
    "start_costs",
    "warm_layered",
    "zero_wait_bound",
]

Run = tuple[float, float]  # (start, end) of one task run on a pod


@dataclass(frozen=True, slots=True)
class Schedule:
    """When each task runs, in trace order, and how long it waited after it was ready."""

    runs: tuple[Run, ...]
    waits: tuple[float, ...]
    hold_s: float = 0.0
    cap: int = 0  # most pods at once


def schedule(
    trace: Sequence[TraceTask], config: ScalingSettings, *, hold_s: float = 0.0, cap: int | None = None
) -> Schedule:
    """The runs of `cap` (default `max_workers`) always-ready pods serving the trace FIFO.

    Claims follow the engine's rules: queue order is readiness order (arrived and parent done), a
    user holds at most `per_user_concurrency_limit` tasks, a pod `tasks_per_worker`. With
    `hold_s > 0` a ready task that would need one more slot waits instead when a running task ends
    within `hold_s` of its readiness (it then takes that slot): clairvoyance about durations traded
    for wait.
    """
    pods = config.max_workers if cap is None else cap
    slots = pods * config.tasks_per_worker
    limit = config.per_user_concurrency_limit
    n = len(trace)
    children: dict[int, list[int]] = defaultdict(list)
    for t in trace:
        if t.depends_on is not None:
            children[t.depends_on].append(t.index)
    arrived = [False] * n
    done = [False] * n
    ready_at: list[float | None] = [None] * n
    start: list[float | None] = [None] * n
    ready: list[int] = []
    ends: list[float] = []  # end times of the running tasks, sorted
    user_running: Counter[str] = Counter()
    events: list[tuple[float, int, int, int]] = []  # (time, push order, kind, task); kind 0 arrive, 1 done
    order = itertools.count()
    for t in trace:
        heapq.heappush(events, (t.arrival_s, next(order), 0, t.index))
    if slots <= 0:
        raise ValueError("a schedule needs at least one pod slot (max_workers >= 1)")
    now = -math.inf
    freed_now = 0  # slots freed at `now` and not taken again: taking one adds no concurrency

    def make_ready(idx: int) -> None:
        ready.append(idx)
        ready_at[idx] = now

    while events:
        at, _, kind, idx = heapq.heappop(events)
        if at > now:
            now, freed_now = at, 0
        task = trace[idx]
        if kind == 0:
            arrived[idx] = True
            if task.depends_on is None or done[task.depends_on]:
                make_ready(idx)
        else:
            done[idx] = True
            ends.remove(at)
            user_running[task.user_id] -= 1
            freed_now += 1
            for child in children.get(idx, []):
                if arrived[child]:
                    make_ready(child)
        held = 0
        for q in list(ready):
            if len(ends) >= slots:
                break
            user = trace[q].user_id
            if user_running[user] >= limit:
                continue
            if freed_now > 0:
                freed_now -= 1
            else:
                ready_q = ready_at[q]
                assert ready_q is not None
                if hold_s > 0 and held < len(ends) and ends[held] - ready_q <= hold_s:
                    held += 1  # a running task ends soon enough: wait for its slot
                    continue
            ready.remove(q)
            start[q] = now
            end = now + trace[q].duration_s
            bisect.insort(ends, end)
            user_running[user] += 1
            heapq.heappush(events, (end, next(order), 1, q))
    runs: list[Run] = []
    waits: list[float] = []
    for t in trace:
        s, r = start[t.index], ready_at[t.index]
        assert s is not None and r is not None, f"task {t.index} never ran"
        runs.append((s, s + t.duration_s))
        waits.append(s - r)
    return Schedule(tuple(runs), tuple(waits), hold_s, pods)


def earliest_schedule(trace: Sequence[TraceTask], config: ScalingSettings) -> Schedule:
    """The least wait any fleet of `max_workers` pods gives: each task starts as soon as it may."""
    return schedule(trace, config)


def need_profile(runs: Sequence[Run], tasks_per_worker: int = 1) -> list[tuple[float, int]]:
    """Pods needed over time, `(t, need from t on)`, from task runs (ends before starts at a tie)."""
    moves = sorted([(e, -1) for s, e in runs if e > s] + [(s, 1) for s, e in runs if e > s])
    profile: list[tuple[float, int]] = []
    running = 0
    for t, step in moves:
        running += step
        need = math.ceil(running / tasks_per_worker)
        if profile and profile[-1][0] == t:
            profile[-1] = (t, need)
        elif not profile or profile[-1][1] != need:
            profile.append((t, need))
    return profile


@dataclass(frozen=True, slots=True)
class Layer:
    busy_s: float
    gaps_s: tuple[float, ...]  # idle gaps between busy stretches, in time order


def layers(profile: Sequence[tuple[float, int]]) -> list[Layer]:
    """Cut a need profile into layers: layer k is busy while the need is at least k."""
    top = max((need for _, need in profile), default=0)
    out: list[Layer] = []
    for k in range(1, top + 1):
        busy = 0.0
        gaps: list[float] = []
        up_at: float | None = None
        down_at: float | None = None
        for t, need in profile:
            if need >= k and up_at is None:
                if down_at is not None:
                    gaps.append(t - down_at)
                up_at = t
            elif need < k and up_at is not None:
                busy += t - up_at
                up_at, down_at = None, t
        out.append(Layer(busy, tuple(g for g in gaps if g > 0)))
    return out


@dataclass(frozen=True, slots=True)
class Bound:
    """The least a fleet can pay for given task runs, and how that least is made."""

    billed_s: float
    busy_s: float  # task-seconds of the runs
    starts: int  # pod starts of the cheapest layering (layers + gaps bridged by a new pod)
    layers: int
    gaps_kept: int  # gaps paid idle
    failed_spawns: int  # spawn failures the seeded world puts before the last needed good pod
    start_s: float  # mean price of one pod start (boot + terminate delay), failures included


def start_costs(
    params: SimParams, config: ScalingSettings, starts: int, *, drawn: bool
) -> tuple[list[float], list[int]]:
    """For U = 0..starts: the least billed by U pod starts and by the failed spawns met on the way.

    The seeded world is the engine's (`SimParams.spawn_draws`): the j-th spawn of any policy gets
    the j-th draw. A start is billed its boot and, once released, `terminate_delay_s`; a failed
    spawn at the least until it is cancelled and the provider confirms (`terminate_delay_s`) or its
    failure is known, whichever is sooner. `drawn=False` prices every boot at the distribution's
    floor (the bound: no policy gets faster pods); `drawn=True` at the boots the world draws, in
    spawn order (the clairvoyant plan: it knows each pod's boot but cannot choose its pods).
    Returns the cumulative cost and the failed spawns before the U-th good pod.
    """
    release_s = min(params.terminate_delay_s, params.tail_s)
    floor = params.boot_floor_s()
    error_floor = min(params.spawn_error_after_s, params.terminate_delay_s)
    silent_floor = min(config.spawn_timeout_s, params.terminate_delay_s)
    cost, count = [0.0], [0]
    paid, failed = 0.0, 0
    for boot, fault in params.spawn_draws():
        if len(cost) > starts:
            break
        if fault is None:
            paid += (boot if drawn else floor) + release_s
            cost.append(paid)
            count.append(failed)
        else:
            failed += 1
            paid += error_floor if fault == "spawn_error" else silent_floor
            if failed > 1000 * (starts + 1):
                raise ValueError("the spawn failure rates leave almost no good pod")
    return cost, count


def layered_bound(runs: Sequence[Run], config: ScalingSettings, params: SimParams, *, drawn: bool = False) -> Bound:
    """The least billed GPU-seconds of any fleet in the simulated world that makes these runs.

    See the module docstring for the argument. With `drawn=False` it holds for every run of every
    policy applied to its own task runs; applied to `earliest_schedule` it is the zero-wait bound.
    With `drawn=True` pod starts are priced at the boots the world draws (`start_costs`).
    """
    ls = layers(need_profile(runs, config.tasks_per_worker))
    busy_tasks = sum(e - s for s, e in runs)
    base = sum(layer.busy_s + sum(layer.gaps_s) for layer in ls)
    gaps = sorted((g for layer in ls for g in layer.gaps_s), reverse=True)
    n_layers = len(ls)
    cost, failed = start_costs(params, config, n_layers + len(gaps), drawn=drawn)
    best: tuple[float, int] | None = None
    saved = 0.0
    for u in range(len(gaps) + 1):
        if u > 0:
            saved += gaps[u - 1]
        total = base - saved + cost[n_layers + u]
        if best is None or total < best[0]:
            best = (total, u)
    assert best is not None
    total, u = best
    starts = n_layers + u
    return Bound(
        billed_s=total,
        busy_s=busy_tasks,
        starts=starts,
        layers=n_layers,
        gaps_kept=len(gaps) - u,
        failed_spawns=failed[starts],
        start_s=(cost[starts] / starts) if starts else 0.0,
    )


def _figures(bound: Bound, sched: Schedule) -> Figures:
    waits = list(sched.waits)
    return {
        "tasks": len(sched.runs),
        "tasks_done": len(sched.runs),
        "billed_gpu_s": round(bound.billed_s, 1),
        "busy_gpu_s": round(bound.busy_s, 1),
        "billed_per_busy": round(bound.billed_s / bound.busy_s, 3) if bound.busy_s else 0.0,
        "wait_p50_s": round(percentile(waits, 50), 1),
        "wait_p95_s": round(percentile(waits, 95), 1),
        "wait_p99_s": round(percentile(waits, 99), 1),
        "spawns": bound.starts + bound.failed_spawns,
        "failed_spawns": bound.failed_spawns,
        "terminations": bound.starts + bound.failed_spawns,
        "pod_starts": bound.starts,
        "layers": bound.layers,
        "gaps_kept_idle": bound.gaps_kept,
        "pod_start_price_s": round(bound.start_s, 1),
        "peak_workers": bound.layers,
        "killed_within_2min_of_promotion": 0,
        "spawns_beyond_demand": 0,
        "hold_s": round(sched.hold_s, 1),
        "cap_workers": sched.cap,
    }


def zero_wait_bound(
    trace: Sequence[TraceTask], config: ScalingSettings, params: SimParams, *, drawn: bool = False
) -> Figures:
    """The bound at the least wait (`drawn=False`), or the clairvoyant plan at that wait (`drawn=True`)."""
    sched = earliest_schedule(trace, config)
    return _figures(layered_bound(sched.runs, config, params, drawn=drawn), sched)


def clairvoyant_plan(
    trace: Sequence[TraceTask], config: ScalingSettings, params: SimParams, wait_p95_s: float
) -> Figures:
    """The cheapest schedule of the family (hold, cap) whose p95 wait is within `wait_p95_s`, drawn boots."""
    earliest = earliest_schedule(trace, config)
    budget = max(wait_p95_s, percentile(list(earliest.waits), 95))
    best: tuple[float, Schedule, Bound] | None = None
    holds = sorted({0.0, *(budget * f for f in (0.25, 0.5, 0.75, 1.0))})
    for hold in holds:
        for cap in range(config.max_workers, 0, -1):
            sched = schedule(trace, config, hold_s=hold, cap=cap)
            if percentile(list(sched.waits), 95) > budget + 1e-9:
                break  # fewer pods only wait longer
            bound = layered_bound(sched.runs, config, params, drawn=True)
            if best is None or bound.billed_s < best[0]:
                best = (bound.billed_s, sched, bound)
    assert best is not None  # the earliest schedule (hold 0, cap max_workers) always fits
    return _figures(best[2], best[1])


def warm_layered(runs: Sequence[Run], config: ScalingSettings, params: SimParams) -> Bound:
    """`layered_bound(drawn=True)` in a world with a warm pool: a gap of a layer may also be bridged
    by parking its pod (stop, disk billed while stopped) and resuming it in time.

    A parked gap g costs `stop_delay_s + stopped_cost_share * g` plus the resume: the mean resume
    time, or, for the share of resumes the world refuses, the refusal and a new pod's mean start.
    Each gap takes the cheapest of staying idle, parking and a new pod; each layer's first use is a
    new pod, as in `oracle`. Resumes are priced at their mean, not drawn one by one: a plan a
    clairvoyant fleet could carry out on average, the warm world's counterpart of `oracle`.
    """
    ls = layers(need_profile(runs, config.tasks_per_worker))
    busy_tasks = sum(e - s for s, e in runs)
    n_layers = len(ls)
    busy_layers = sum(layer.busy_s for layer in ls)
    gaps = [g for layer in ls for g in layer.gaps_s]
    cold_cost, _ = start_costs(params, config, n_layers + len(gaps), drawn=True)
    cold = (cold_cost[-1] / (n_layers + len(gaps))) if n_layers + len(gaps) else 0.0
    resume_draw = params.resume_sampler()
    rng = random.Random(f"resume-mean:{params.seed}")
    resume_mean = sum(resume_draw(rng) for _ in range(1000)) / 1000
    refused = params.resume_error_rate
    resume_price = (1 - refused) * resume_mean + refused * (params.resume_error_after_s + cold)
    idle_paid, parked, bridged_cold = 0.0, 0, 0
    for g in gaps:
        park = params.stop_delay_s + params.stopped_cost_share * g + resume_price
        best = min(g, park, cold)
        if best == g:
            idle_paid += g
        elif best == park:
            idle_paid += park
            parked += 1
        else:
            bridged_cold += 1
    starts = n_layers + bridged_cold
    total = busy_layers + idle_paid + cold_cost[starts]
    _, failed = start_costs(params, config, starts, drawn=True)
    return Bound(
        billed_s=total,
        busy_s=busy_tasks,
        starts=starts,
        layers=n_layers,
        gaps_kept=len(gaps) - bridged_cold - parked,
        failed_spawns=failed[starts],
        start_s=(cold_cost[starts] / starts) if starts else 0.0,
    )


def gap_closed(default: float, policy: float, reference: float) -> float | None:
    """Fraction of the default's distance to the reference that `policy` closes (1 = reached it)."""
    if default - reference <= 1e-9:
        return None
    return (default - policy) / (default - reference)


# The references, by the name the benchmarks and `orchestrator simulate --policy` use.
REFERENCE_NAMES = ("bound", "oracle", "oracle-p95", "oracle-warm")


def reference_figures(
    trace: Sequence[TraceTask], config: ScalingSettings, params: SimParams, default_p95_s: float
) -> dict[str, Figures]:
    """`bound` (zero-wait lower bound), `oracle` (zero-wait plan, drawn boots), `oracle-p95` (plan at that p95),
    `oracle-warm` (the zero-wait plan when gaps may also be bridged by a warm pool: `warm_layered`)."""
    earliest = earliest_schedule(trace, config)
    return {
        "bound": zero_wait_bound(trace, config, params),
        "oracle": zero_wait_bound(trace, config, params, drawn=True),
        "oracle-p95": clairvoyant_plan(trace, config, params, default_p95_s),
        "oracle-warm": _figures(warm_layered(earliest.runs, config, params), earliest),
    }
