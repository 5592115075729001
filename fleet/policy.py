"""The scaling policy: a pure function from what the Scaler sees to a Decision with its reasons.

`decide(ctx)` takes one `PolicyContext` (what the Scaler saw, the policy's memory, the config and
`now`) and never reads a clock, a database or Ray. The Scaler stores `Decision.history` and passes
it back in next cycle's context (Ray Serve's `replica_queue_length_autoscaling_policy(ctx)` returns
`(decision, new_policy_state)` the same way). One typed context keeps every caller and every
baseline policy (`sim.baselines`) in step.

The rules, and the incident mistake each one prevents:
- Capacity is `spawning + active` workers. A pod still booting is capacity on its way, so calling
  `decide` again while it boots spawns nothing more for the same demand. (17:55: two workers were
  launched 26 s apart for one unit of demand.)
- `desired = ceil((claimable + in_progress_on_capacity) / tasks_per_worker)` clamped to
  [min_workers, max_workers]; at most `max_spawns_per_cycle` per decision; no delay on scale-up.
  Claimable is already capped by the per-user concurrency limit (the demand query does that), so
  one user's 50 queued tasks ask for at most `per_user_concurrency_limit` workers.
- The failure-rate breaker counts spawn outcomes only (spawn error, spawn timeout, heartbeat
  lost). A scale-down is not an outcome, so it can never open the breaker. (The replaced system
  counted its own terminations and stopped scaling.)
- Scale-down drains only idle active workers, longest idle first, waits
  `scale_down_stabilization_s` after the last scale-up, and keeps an idle worker at least
  `idle_timeout_s`, and at least the expected boot time while work keeps arriving: the ski-rental
  break-even (paying to keep a worker idle for one boot time costs no more than booting a new one
  would, so never give it up sooner). (17:59: a worker was killed one minute after a 2.5 minute
  boot, with work still arriving.)
- Spawning workers are never cancelled by the policy; draining workers are not capacity.
- What it learns of the workload (`fleet.learning`, kept in `FleetHistory.learned`): once one
  boot window and ten minutes of demand are remembered, the idle workers kept are the learned
  rise of demand within a boot time (instead of the fixed idle timeout; none drained within
  `learning.MIN_ACTIVE_BEFORE_DRAIN_S` of promotion), and a queue projection: claimable tasks that
  find no idle or booting worker go FIFO to the busy workers as their tasks end (learned durations
  per type); the k-th of them gets no pod when k busy workers free, with probability >=
  `learning.PROJECTION_CONFIDENCE`, before it has waited as long as a new pod would likely take to
  come up (halfway from the fastest boot seen to the median one). Busy workers of a task type that
  runs shorter than the fastest boot promise nothing (a stream of short tasks needs the pod).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from config.settings import ScalingSettings
from fleet import learning
from fleet.lifecycle import reason_code
from fleet.models import (
    BreakerState,
    BreakerStatus,
    Decision,
    DecisionKind,
    DemandSnapshot,
    FleetHistory,
    SpawnOutcome,
    SpawnOutcomeKind,
    WorkerState,
    WorkerView,
)

__all__ = [
    "BOOT_SAMPLES_KEPT",
    "FAILURE_CODES",
    "PolicyContext",
    "active_for",
    "boot_estimate",
    "decide",
    "idle_for",
    "median_boot",
    "outcomes_from_events",
    "record_outcomes",
    "resume_estimate",
    "resume_samples_from_events",
]

# How many recent measured boot times feed the boot estimate: enough to smooth the 56-157 s spread
# seen in the incident, few enough to follow a change of GPU type or image.
BOOT_SAMPLES_KEPT = 20

# Reason codes of a transition to `error` that are real spawn failures, and what they count as.
# `pod_lost` (the pod exited under an idle active worker) is a lost worker like a silent heartbeat.
# Deliberately absent: `lost_with_task` (fleet.lifecycle.LOST_WITH_TASK: the pod died under a task,
# which is counted against that task's attempts; one user's poison task must not stop the fleet
# from serving everyone else) and `drain_lost` (a scale-down in progress).
FAILURE_CODES: dict[str, SpawnOutcomeKind] = {
    "spawn_error": SpawnOutcomeKind.SPAWN_ERROR,
    "spawn_timeout": SpawnOutcomeKind.SPAWN_TIMEOUT,
    "heartbeat_lost": SpawnOutcomeKind.HEARTBEAT_LOST,
    "pod_lost": SpawnOutcomeKind.HEARTBEAT_LOST,
    "worker_crashed": SpawnOutcomeKind.HEARTBEAT_LOST,  # the worker said so itself (reigh's 'crashed')
}

# A half-open probe that left no trace (its worker vanished without an outcome) is re-issued after
# its spawn timeout plus this many cycles.
_PROBE_GRACE_CYCLES = 3

Inputs = dict[str, float | int | str | None]


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """Everything one scaling decision may look at, and nothing else.

    `workers` is stored as a tuple whatever sequence is passed, so a context cannot change under
    the policy. `history` is what the previous decision returned (`Decision.history`), with this
    cycle's spawn outcomes recorded (`record_outcomes`); `now` is POSIX seconds from the caller.
    """

    snapshot: DemandSnapshot
    workers: Sequence[WorkerView]
    history: FleetHistory
    config: ScalingSettings
    now: float

    def __post_init__(self) -> None:
        if not isinstance(self.workers, tuple):
            object.__setattr__(self, "workers", tuple(self.workers))


def boot_estimate(history: FleetHistory, config: ScalingSettings) -> float:
    """Seconds a new worker costs before it is useful: the 90th percentile of measured boots.

    A high percentile, not the mean: the ski-rental rule keeps an idle worker this long, and
    giving one up is only safe when a replacement would surely take longer to come. Until a boot
    has been measured, `default_boot_time_s`.
    """
    return _p90(history.boot_samples, config.default_boot_time_s)


def _p90(samples: Sequence[float], default: float) -> float:
    """The 90th percentile (nearest rank) of measured times, or `default` before any."""
    if not samples:
        return default
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def median_boot(history: FleetHistory, config: ScalingSettings) -> float:
    """The median of the measured boots (`default_boot_time_s` until one is measured)."""
    if not history.boot_samples:
        return config.default_boot_time_s
    ordered = sorted(history.boot_samples)
    return ordered[(len(ordered) - 1) // 2]


def resume_estimate(history: FleetHistory, config: ScalingSettings) -> float:
    """Seconds a stopped worker takes to be useful again: the 90th percentile of measured resumes
    (`default_resume_time_s` until one is measured). A high percentile for the reason of `boot_estimate`."""
    return _p90(history.resume_samples, config.default_resume_time_s)


def _measure_resumes(history: FleetHistory, live: Sequence[WorkerView]) -> tuple[float, ...]:
    """Resume times of the workers that were resuming last cycle and are active now."""
    asked = dict(history.resuming)
    samples = list(history.resume_samples)
    for w in live:
        start = asked.get(w.id)
        if start is not None and w.state is WorkerState.ACTIVE and w.state_since is not None:
            samples.append(max(0.0, w.state_since - start))
    return tuple(samples[-BOOT_SAMPLES_KEPT:])


def active_for(worker: WorkerView, now: float) -> float:
    """Seconds since the worker's promotion or, if later, its resume (its creation if never promoted)."""
    since = worker.promoted_at if worker.promoted_at is not None else worker.created_at
    if worker.state is WorkerState.ACTIVE and worker.state_since is not None:
        since = max(since, worker.state_since)
    return now - since


def idle_for(worker: WorkerView, now: float) -> float | None:
    """Seconds an active worker has been idle, or None if it holds a task or is not active."""
    if worker.state is not WorkerState.ACTIVE or worker.tasks_in_progress > 0:
        return None
    since = worker.idle_since
    if since is None:
        since = worker.promoted_at if worker.promoted_at is not None else worker.created_at
    return max(0.0, now - since)


def record_outcomes(
    history: FleetHistory, outcomes: Iterable[SpawnOutcome], now: float, config: ScalingSettings
) -> FleetHistory:
    """Add spawn outcomes (deduplicated by worker and kind), drop those outside the failure window.

    BOOTED outcomes with a boot time also feed the boot estimate (the last BOOT_SAMPLES_KEPT).
    """
    cutoff = now - config.failure_window_s
    seen = {(o.worker_id, o.kind) for o in history.outcomes}
    kept = [o for o in history.outcomes if o.at >= cutoff]
    samples = list(history.boot_samples)
    for outcome in sorted(outcomes, key=lambda o: o.at):
        key = (outcome.worker_id, outcome.kind)
        if key in seen or outcome.at < cutoff:
            continue
        seen.add(key)
        kept.append(outcome)
        if outcome.kind is SpawnOutcomeKind.BOOTED and outcome.boot_seconds is not None:
            samples.append(outcome.boot_seconds)
    kept.sort(key=lambda o: o.at)
    return replace(history, outcomes=tuple(kept), boot_samples=tuple(samples[-BOOT_SAMPLES_KEPT:]))


def outcomes_from_events(events: Iterable[tuple[str, float, str | None, str, str]]) -> list[SpawnOutcome]:
    """Rebuild spawn outcomes from `worker_events` rows `(worker_id, at, from, to, reason)`.

    A restarted Scaler calls this so the breaker survives restarts. `spawning -> active` is BOOTED
    (boot time measured from the worker's `spawning` event); a move to `error` whose reason code is
    in FAILURE_CODES is that failure. Everything else (drains, normal terminations) is no outcome.
    """
    spawned_at: dict[str, float] = {}
    out: list[SpawnOutcome] = []
    for worker_id, at, from_status, to_status, reason in sorted(events, key=lambda e: e[1]):
        if to_status == WorkerState.SPAWNING.value:
            spawned_at.setdefault(worker_id, at)
        elif to_status == WorkerState.ACTIVE.value and from_status == WorkerState.SPAWNING.value:
            start = spawned_at.get(worker_id)
            boot = at - start if start is not None else None
            out.append(SpawnOutcome(worker_id, SpawnOutcomeKind.BOOTED, at, boot))
        elif to_status == WorkerState.ERROR.value:
            kind = FAILURE_CODES.get(reason_code(reason))
            if kind is not None:
                out.append(SpawnOutcome(worker_id, kind, at))
    return out


def resume_samples_from_events(events: Iterable[tuple[str, float, str | None, str, str]]) -> tuple[float, ...]:
    """Measured resumes (entering `resuming` to `active`) from `worker_events` rows, oldest first.

    A restarted Scaler calls this so the resume estimate survives restarts, as the breaker does."""
    asked: dict[str, float] = {}
    samples: list[tuple[float, float]] = []
    for worker_id, at, from_status, to_status, _reason in sorted(events, key=lambda e: e[1]):
        if to_status == WorkerState.RESUMING.value:
            asked[worker_id] = at
        elif to_status == WorkerState.ACTIVE.value and from_status == WorkerState.RESUMING.value:
            start = asked.pop(worker_id, None)
            if start is not None:
                samples.append((at, at - start))
    return tuple(d for _, d in samples[-BOOT_SAMPLES_KEPT:])


def _windowed(history: FleetHistory, breaker: BreakerState, config: ScalingSettings, now: float) -> list[SpawnOutcome]:
    start = now - config.failure_window_s
    since = breaker.counting_since
    if since is not None:
        start = max(start, since)
    return [o for o in history.outcomes if start <= o.at <= now]


def _probe_id(breaker: BreakerState, workers: Sequence[WorkerView]) -> str | None:
    if breaker.probe_worker_id is not None or breaker.probe_issued_at is None:
        return breaker.probe_worker_id
    issued = breaker.probe_issued_at
    newer = sorted((w for w in workers if w.created_at >= issued), key=lambda w: (w.created_at, w.id))
    return newer[0].id if newer else None


def _step_breaker(
    history: FleetHistory, workers: Sequence[WorkerView], config: ScalingSettings, now: float
) -> tuple[BreakerState, list[str]]:
    """The breaker after this cycle's facts, and sentences saying what changed."""
    notes: list[str] = []
    b = history.breaker
    if b.status is BreakerStatus.OPEN and b.opened_at is not None and now - b.opened_at >= config.breaker_cooldown_s:
        b = replace(b, status=BreakerStatus.HALF_OPEN, probe_issued_at=None, probe_worker_id=None)
        notes.append(f"breaker half-open: cooldown of {config.breaker_cooldown_s:.0f}s over, one probe spawn allowed")
    if b.status is BreakerStatus.HALF_OPEN and b.probe_issued_at is not None:
        probe = _probe_id(b, workers)
        b = replace(b, probe_worker_id=probe)
        issued = b.probe_issued_at
        result: SpawnOutcome | None = None
        for o in history.outcomes:
            if issued is not None and o.at >= issued and (o.worker_id == probe or probe is None):
                result = o
                break
        if result is not None and result.kind is SpawnOutcomeKind.BOOTED:
            b = BreakerState(status=BreakerStatus.CLOSED, counting_since=result.at)
            notes.append(f"breaker closed: probe {result.worker_id} booted")
        elif result is not None:
            b = BreakerState(status=BreakerStatus.OPEN, opened_at=now, counting_since=b.counting_since)
            notes.append(f"breaker re-opened: probe {result.worker_id} failed ({result.kind.value})")
        elif (
            issued is not None
            and (probe is None or all(w.id != probe for w in workers))
            and now - issued > config.spawn_timeout_s + _PROBE_GRACE_CYCLES * config.cycle_interval_s
        ):
            b = replace(b, probe_issued_at=None, probe_worker_id=None)
            notes.append("breaker half-open: probe left no worker and no outcome; a new probe may go")
    recent = _windowed(history, b, config, now)
    attempts = len(recent)
    failures = sum(1 for o in recent if o.kind.is_failure())
    rate = failures / attempts if attempts else 0.0
    b = replace(b, failure_rate=rate, attempts_in_window=attempts, failures_in_window=failures)
    if (
        b.status is BreakerStatus.CLOSED
        and attempts >= config.min_attempts_for_breaker
        and (rate >= config.failure_rate_threshold)
    ):
        b = replace(b, status=BreakerStatus.OPEN, opened_at=now)
        notes.append(
            f"breaker opened: {failures} of {attempts} spawns failed in the last {config.failure_window_s:.0f}s "
            f"(rate {rate:.2f} >= {config.failure_rate_threshold:.2f})"
        )
    return b, notes


def _breaker_words(b: BreakerState, config: ScalingSettings) -> str:
    return (
        f"breaker {b.status.value} (failure rate {b.failure_rate:.2f} = {b.failures_in_window} failed of "
        f"{b.attempts_in_window} spawns in {config.failure_window_s:.0f}s, opens at "
        f">= {config.failure_rate_threshold:.2f} with >= {config.min_attempts_for_breaker} attempts)"
    )


def decide(ctx: PolicyContext) -> Decision:
    """One scaling decision. Pure; see the module docstring for the rules."""
    snapshot, workers, history, config, now = ctx.snapshot, ctx.workers, ctx.history, ctx.config, ctx.now
    live = [w for w in workers if not w.state.is_terminal()]
    by_state = {s: [w for w in live if w.state is s] for s in WorkerState}
    spawning, active = by_state[WorkerState.SPAWNING], by_state[WorkerState.ACTIVE]
    resuming, stopped = by_state[WorkerState.RESUMING], by_state[WorkerState.STOPPED]
    capacity = len(spawning) + len(resuming) + len(active)
    # Pods that hold a GPU without being capacity: bounded by max_workers like the rest.
    leaving = len(by_state[WorkerState.DRAINING]) + len(by_state[WorkerState.STOPPING])

    # Tasks held by draining/terminating/error workers need no new capacity: they finish or are
    # requeued (and then show up as claimable).
    held_elsewhere = sum(w.tasks_in_progress for w in live if not w.state.counts_as_capacity())
    in_progress = max(0, snapshot.in_progress - held_elsewhere)
    demand_tasks = snapshot.claimable + in_progress
    tpw = config.tasks_per_worker
    raw_desired = math.ceil(demand_tasks / tpw)
    desired = min(max(raw_desired, config.min_workers), config.max_workers)
    clamps: list[str] = []
    if raw_desired < config.min_workers:
        clamps.append(f"raised to min_workers {config.min_workers}")
    if raw_desired > config.max_workers:
        clamps.append(f"capped at max_workers {config.max_workers}")

    last_demand_at = now if demand_tasks > 0 or snapshot.queued > 0 else history.last_demand_at
    breaker, notes = _step_breaker(history, live, config, now)
    reasons: list[str] = list(notes)
    boot_est = boot_estimate(history, config)
    warm_pool = config.warm_pool_size > 0
    resume_samples = _measure_resumes(history, live) if warm_pool else history.resume_samples
    resume_est = resume_estimate(replace(history, resume_samples=resume_samples), config)
    # What an idle worker given up costs when demand comes back: a new pod's boot, or with a warm
    # pool the resume of the stopped pod it becomes.
    # (A pool that is full with no stopped pod to give back terminates what it drains: a boot then.)
    parked_or_parking = sum(
        len(by_state[st]) for st in (WorkerState.STOPPED, WorkerState.STOPPING, WorkerState.DRAINING)
    )
    resumable = warm_pool and (bool(stopped) or parked_or_parking < config.warm_pool_size)
    refill_s = min(resume_est, boot_est) if resumable else boot_est
    # What is learned of the workload (fleet.learning): how demand rises, how long tasks run.
    learned = learning.observe(history.learned, demand_tasks, live, now, snapshot.claimable)
    fastest_boot = min(history.boot_samples, default=config.default_boot_time_s)
    # A queued task waits for a busy worker that frees before a new pod would likely be up: halfway
    # from the fastest boot seen to the median one (a fresh pod comes later three times in four).
    horizon = fastest_boot + learning.COMING_HORIZON_SHARE * (median_boot(history, config) - fastest_boot)
    keep_idle = learning.headroom(learned, now, refill_s)
    # Claimable tasks that find no idle or booting worker wait for the busy workers' learned task
    # ends (fleet.learning.project_queue), headroom or not: the policy never spawns for its headroom,
    # so a worker about to free is no less on its way when demand is expected to rise. They are the
    # youngest claimable tasks (idle and booting workers take the oldest); their waits so far count.
    waiting = min(max(0, desired - capacity), snapshot.claimable)
    since = learned.queued_since[-waiting:] if waiting else ()
    waited = [0.0] * (waiting - len(since)) + [now - t for t in since]
    projection = (
        learning.project_queue(
            learned, active, now, waiting, horizon, fastest_boot, learning.PROJECTION_CONFIDENCE, waited
        )
        if tpw == 1
        else None
    )
    served = projection.served if projection is not None else 0

    demand_words = (
        f"desired {desired} = ceil((claimable {snapshot.claimable} + in_progress {in_progress}) / "
        f"tasks_per_worker {tpw}) = {raw_desired}"
        + (f", {' and '.join(clamps)}" if clamps else "")
        + f"; capacity {capacity} (active {len(active)}, spawning {len(spawning)}"
        + (f", resuming {len(resuming)}" if resuming else "")
        + ")"
    )

    # ---- scale up
    # A busy worker whose task ends before a new pod would likely be up claims the queued task
    # first: spawning for it would only buy an idle pod.
    need = max(0, desired - capacity - served)
    if projection is not None and projection.waiting > 0 and projection.freeing:
        reasons.append(
            f"queue projection: {projection.waiting} claimable task(s) find no idle or booting worker; {served} "
            f"of them (oldest first) start on a busy worker freeing before they have waited {horizon:.0f}s "
            f"(halfway from the fastest boot {fastest_boot:.0f}s to the median) with probability >= "
            f"{projection.confidence:.0%} ({len(projection.freeing)} busy worker(s) may free within "
            f"{horizon:.0f}s: {', '.join(projection.freeing)}; learned durations)"
        )
    # Draining pods still cost money and hold a GPU: max_workers bounds them too.
    room = max(0, config.max_workers - capacity - leaving)
    # A stopped pod comes back faster than a new one boots, and resuming it creates nothing: the
    # newest stopped first (its host is the likeliest to still have its GPU free).
    newest_stopped = sorted(stopped, key=lambda w: (-(w.state_since or w.created_at), w.id))
    resume = [w.id for w in newest_stopped[: min(need, room)]]
    need_new = need - len(resume)
    spawn = min(need_new, config.max_spawns_per_cycle, room - len(resume))
    if need_new > spawn:
        limit = (
            f"max_spawns_per_cycle {config.max_spawns_per_cycle}"
            if spawn == config.max_spawns_per_cycle
            else f"max_workers {config.max_workers} with {leaving} draining or stopping"
        )
        clamps.append(f"spawn limited to {spawn} by {limit} (need {need_new})")
    kind = DecisionKind.STEADY
    if resume:
        kind = DecisionKind.SCALE_UP
        reasons.append(
            f"scale_up: resume {len(resume)} stopped worker(s) ({', '.join(resume)}) because {demand_words}; "
            f"a resume takes ~{resume_est:.0f}s against a new pod's ~{boot_est:.0f}s"
        )
    need_total, need = need, need_new
    if need > 0:
        no_room = (
            f"capped: no spawn: need {need} but max_workers {config.max_workers} is reached (capacity {capacity} "
            f"+ draining {len(by_state[WorkerState.DRAINING])}"
            + (f" + stopping {len(by_state[WorkerState.STOPPING])}" if by_state[WorkerState.STOPPING] else "")
            + f"); {demand_words}"
        )
        if breaker.status is BreakerStatus.OPEN:
            spawn = 0
            kind = DecisionKind.BREAKER_OPEN
            opened = breaker.opened_at if breaker.opened_at is not None else now
            wait = max(0.0, config.breaker_cooldown_s - (now - opened))
            reasons.append(f"no spawn: need {need} but {_breaker_words(breaker, config)}; probe in {wait:.0f}s")
        elif breaker.status is BreakerStatus.HALF_OPEN:
            if breaker.probe_issued_at is None and spawn == 0:
                # The probe is a spawn like any other: with no room under max_workers it waits (not issued).
                kind = DecisionKind.CAPPED
                reasons.append(f"{no_room}; breaker half-open, its probe waits for room")
            elif breaker.probe_issued_at is None:
                spawn = 1
                kind = DecisionKind.PROBE
                breaker = replace(breaker, probe_issued_at=now, probe_worker_id=None)
                reasons.append(f"scale_up: spawn 1 probe (need {need}) because {demand_words}; breaker half-open")
            else:
                spawn = 0
                kind = DecisionKind.PROBE_PENDING
                reasons.append(
                    f"no spawn: need {need} but breaker half-open waiting for probe "
                    f"{breaker.probe_worker_id or '(not yet seen)'} issued at {breaker.probe_issued_at:.0f}"
                )
        elif spawn == 0:
            kind = DecisionKind.CAPPED
            reasons.append(no_room)
        if spawn > 0 and breaker.status is BreakerStatus.CLOSED:
            kind = DecisionKind.SCALE_UP
            reasons.append(
                f"scale_up: spawn {spawn} because {demand_words}"
                + (f"; {clamps[-1]}" if need > spawn else "")
                + f"; {_breaker_words(breaker, config)}"
            )
    elif raw_desired > config.max_workers and not resume:
        # Demand asks for more than max_workers and the fleet is at it: held back, not "steady".
        kind = DecisionKind.CAPPED
        reasons.append(
            f"capped: no spawn: demand asks for {raw_desired} worker(s) but max_workers {config.max_workers} "
            f"caps the fleet; {demand_words}"
        )

    if resume and not kind.changes_fleet():
        kind = DecisionKind.SCALE_UP  # the resumes go ahead; the reasons say why nothing more

    # ---- scale down
    drain: list[str] = []
    # With a learned headroom, idle workers beyond it are surplus; without one, all of them.
    surplus = capacity - desired - (keep_idle or 0)
    stabilizing = history.last_scale_up_at is not None and now - history.last_scale_up_at < (
        config.scale_down_stabilization_s
    )
    work_arriving = demand_tasks > 0 or (last_demand_at is not None and now - last_demand_at <= boot_est)
    # Before anything is learned the ski-rental rule keeps the boot (17:59: a worker killed a minute
    # after a 2.5 minute boot while work kept arriving), warm pool or not.
    keep_for = max(config.idle_timeout_s, boot_est) if work_arriving else config.idle_timeout_s
    if surplus > 0 and spawn == 0 and not resume:
        idle = sorted(
            ((t, w) for w in active if (t := idle_for(w, now)) is not None), key=lambda tw: (-tw[0], tw[1].id)
        )
        if stabilizing and history.last_scale_up_at is not None:
            reasons.append(
                f"no scale-down: surplus {surplus} ({demand_words}) but last scale-up "
                f"{now - history.last_scale_up_at:.0f}s ago < stabilization {config.scale_down_stabilization_s:.0f}s"
            )
        else:
            if keep_idle is not None:  # drained at once beyond the headroom, but never a fresh worker
                eligible = [(t, w) for t, w in idle if active_for(w, now) >= learning.MIN_ACTIVE_BEFORE_DRAIN_S]
            else:
                eligible = [(t, w) for t, w in idle if t >= keep_for]
            chosen = eligible[:surplus]
            drain = [w.id for _, w in chosen]
            keep_words = (
                f"keep {keep_idle} idle = the learned rise of demand within the "
                + (f"resume estimate {refill_s:.0f}s " if warm_pool else f"boot estimate {boot_est:.0f}s ")
                + f"at q{learning.HEADROOM_QUANTILE:.2f}, none drained within "
                f"{learning.MIN_ACTIVE_BEFORE_DRAIN_S:.0f}s of promotion"
                if keep_idle is not None
                else f"keep idle >= {keep_for:.0f}s = max(idle_timeout {config.idle_timeout_s:.0f}s, "
                f"boot estimate {boot_est:.0f}s) while work keeps arriving"
                if work_arriving
                else f"keep idle >= idle_timeout {config.idle_timeout_s:.0f}s (no demand for "
                f"{'ever' if last_demand_at is None else f'{now - last_demand_at:.0f}s'})"
            )
            if drain:
                idle_words = ", ".join(f"{w.id} idle {t:.0f}s" for t, w in chosen)
                reasons.append(
                    f"scale_down: drain {len(drain)} ({idle_words}) because surplus {surplus}: {demand_words}; "
                    f"{keep_words}; min_workers {config.min_workers}"
                )
            elif idle:
                reasons.append(
                    f"no scale-down yet: surplus {surplus} but {len(idle)} idle worker(s) idle at most "
                    f"{idle[0][0]:.0f}s; {keep_words}"
                )
            else:
                reasons.append(f"no scale-down: surplus {surplus} but every capacity worker is busy or spawning")

    # ---- warm pool: park what is drained while the pool has room; retire what it cannot keep
    park: list[str] = []
    retire: list[str] = []
    resumed = set(resume)
    still_stopped = [w for w in newest_stopped if w.id not in resumed]
    if warm_pool:
        # Draining workers count as parking: a drain asked to park is not visible as such.
        pool = len(still_stopped) + len(by_state[WorkerState.STOPPING]) + len(by_state[WorkerState.DRAINING])
        park = drain[: max(0, config.warm_pool_size - pool)]
        keep = max(0, config.warm_pool_size - len(by_state[WorkerState.STOPPING]))  # newest first
        retire = [
            w.id
            for i, w in enumerate(still_stopped)
            if i >= keep or now - (w.state_since or w.created_at) >= config.warm_pool_keep_s
        ]
        if park:
            reasons.append(
                f"warm pool: park {len(park)} ({', '.join(park)}): stop the pod for a resume (~{resume_est:.0f}s) "
                f"instead of terminating it; pool {pool} of warm_pool_size {config.warm_pool_size}"
            )
        if retire:
            reasons.append(
                f"warm pool: retire {len(retire)} stopped ({', '.join(retire)}): kept longer than warm_pool_keep_s "
                f"{config.warm_pool_keep_s:.0f}s or beyond warm_pool_size {config.warm_pool_size}"
            )
    elif still_stopped:  # the warm pool was turned off: its stopped pods go
        retire = [w.id for w in still_stopped]
        reasons.append(f"warm pool off (warm_pool_size 0): retire {len(retire)} stopped ({', '.join(retire)})")

    if drain or (retire and kind is DecisionKind.STEADY):
        kind = DecisionKind.SCALE_DOWN
    elif surplus > 0 and spawn == 0 and not resume:
        kind = DecisionKind.SCALE_DOWN_HELD
    if not reasons:
        reasons.append(f"steady: {demand_words}; {_breaker_words(breaker, config)}")

    new_history = replace(
        history,
        breaker=breaker,
        last_demand_at=last_demand_at,
        last_scale_up_at=now if spawn > 0 or resume else history.last_scale_up_at,
        last_scale_down_at=now if drain else history.last_scale_down_at,
        learned=learned,
        resuming=tuple((w.id, w.state_since or now) for w in resuming) + tuple((i, now) for i in resume),
        resume_samples=resume_samples,
    )
    inputs: Inputs = {
        "queued": snapshot.queued,
        "claimable": snapshot.claimable,
        "in_progress": snapshot.in_progress,
        "in_progress_on_capacity": in_progress,
        "snapshot_taken_at": snapshot.taken_at,
        "tasks_per_worker": tpw,
        "raw_desired": raw_desired,
        "desired": desired,
        "min_workers": config.min_workers,
        "max_workers": config.max_workers,
        "max_spawns_per_cycle": config.max_spawns_per_cycle,
        "clamps": "; ".join(clamps) or None,
        "capacity": capacity,
        "need": need_total,
        "resume": len(resume),
        "surplus": surplus,
        "breaker": breaker.status.value,
        "failure_rate": round(breaker.failure_rate, 4),
        "attempts_in_window": breaker.attempts_in_window,
        "failures_in_window": breaker.failures_in_window,
        "boot_estimate_s": round(boot_est, 1),
        "boot_samples": len(history.boot_samples),
        "keep_idle_s": round(keep_for, 1),
        "resume_estimate_s": round(resume_est, 1),
        "warm_pool_size": config.warm_pool_size,
        "learned_headroom": keep_idle,
        "capacity_on_its_way": served,
        "coming_horizon_s": round(horizon, 1),
        "projected_waiting": projection.waiting if projection is not None else None,
        "projected_freeing": len(projection.freeing) if projection is not None else None,
        "learned_demand_points": len(learned.points),
        "work_arriving": int(work_arriving),
        "last_scale_up_at": history.last_scale_up_at,
        "last_demand_at": last_demand_at,
        "spawning_ids": ",".join(w.id for w in spawning) or None,
        **dict(snapshot.breakdown),
    }
    for state in WorkerState:
        if not state.is_terminal():
            inputs[f"workers_{state.value}"] = len(by_state[state])
    return Decision(
        kind=kind,
        spawn=spawn,
        drain=tuple(drain),
        resume=tuple(resume),
        park=tuple(park),
        retire=tuple(retire),
        reasons=tuple(reasons),
        breaker=breaker,
        desired=desired,
        capacity=capacity,
        inputs=inputs,
        history=new_history,
    )
