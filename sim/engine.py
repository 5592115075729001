"""The simulation engine: the fleet under a simulated clock, running the real `fleet` code.

Tasks arrive from a trace (`sim.trace`); every policy cycle builds a DemandSnapshot and WorkerViews
exactly as the Scaler would and calls the policy (`sim.baselines`) with a `PolicyContext`; every
spawned worker is driven by the real `fleet.lifecycle.next_transition` fed with simulated pod
observations. Pods boot after a sampled delay (default uniform 56-157 s, the two boot times of the
incident), a fraction of spawns fails at the provider or boots but never heartbeats, and workers
claim queued tasks FIFO under the per-user concurrency limit and dependencies. One seeded
`random.Random` draws everything, in spawn order, so the same trace, policy, config and seed always
give the same figures (`sim.results`).

Cycles come on the policy's timer and, for a policy that wakes on tasks as the Scaler does
(`Policy.wake_debounce_s`: the default and `previous`), `new_task_seen_s` after a new task (reigh's
probe; NOTIFY is sooner), woken cycles at least the debounce apart; after any cycle the timer waits
a whole interval again, as the Scaler's loop does.

The warm pool: a policy may park drained workers (`Decision.park`: the pod is stopped,
`stop_delay_s` after the request), resume stopped ones (`Decision.resume`: the pod runs again after
a drawn resume time, or the provider refuses, `resume_error_rate`, when the host's GPUs were taken
meanwhile) and retire them (`Decision.retire`). Resume draws come from their own seeded generator,
in resume order, so they never shift the spawn draws.

Billing: a pod's GPU is billed from its spawn request until the provider confirms it stopped or
gone, and again from each resume request until the next confirmed stop (a refused resume: the
refusal) or gone; while stopped, its disk is billed `stopped_cost_share` GPU-seconds per second.
The run ends `tail_s` after the last task finishes (so a policy that keeps idle workers after the
work is done pays for them during the tail, and a floor of always-on workers is not billed forever).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import ScalingSettings
from fleet import lifecycle, policy
from fleet.models import DemandSnapshot, FleetHistory, SpawnOutcome, WorkerState, WorkerView
from sim.baselines import Policy, make_policy
from sim.results import Figures, GpuStint, PodLife, SimResult, percentile
from sim.trace import TraceTask, load_trace

__all__ = [
    "NEW_TASK_SEEN_S",
    "SHORT_LIFE_S",
    "SIM_SCALING_OVERRIDES",
    "SimParams",
    "run",
    "sim_scaling",
    "simulate",
]

# The default policy runs with the production defaults of config.settings.ScalingSettings, which
# were tuned on the shipped traces (bench/policy_compare.py, bench/policy_curve.py). Keep overrides
# here only for simulator-specific knobs.
SIM_SCALING_OVERRIDES: dict[str, float | int] = {}

# Promotion within this long of a worker being scaled down counts as "killed shortly after boot".
SHORT_LIFE_S = 120.0

# reigh's probe for a newly queued task (config `queue.new_task_probe_s`'s default)
NEW_TASK_SEEN_S = 0.25

# What RunPod answers a resume when the pod's host has no free GPU left for it.
RESUME_REFUSED = "There are not enough free GPUs on the host machine to start this pod"

# States a termination leaves as a scale-down (drained or drained at once), not a failure's cleanup.
_SCALED_DOWN_FROM = (WorkerState.DRAINING, WorkerState.ACTIVE)


def _sampler(spec: str, what: str) -> Callable[[random.Random], float]:
    kind, *args = spec.split(":")
    try:
        values = [float(a) for a in args]
    except ValueError:
        values = []
    if kind == "uniform" and len(values) == 2:
        lo, hi = values
        return lambda rng: rng.uniform(lo, hi)
    if kind == "lognormal" and len(values) == 2:
        median, sigma = values
        return lambda rng: rng.lognormvariate(math.log(median), sigma)
    if kind == "fixed" and len(values) == 1:
        return lambda rng: values[0]
    raise ValueError(f"{what} distribution {spec!r}: use uniform:LO:HI, lognormal:MEDIAN:SIGMA or fixed:S")


@dataclass(frozen=True)
class SimParams:
    """The simulated world (not the policy)."""

    seed: int = 0
    # "uniform:LO:HI", "lognormal:MEDIAN:SIGMA" or "fixed:SECONDS": pod request to first heartbeat.
    boot: str = "uniform:56:157"
    spawn_error_rate: float = 0.03  # provider refuses the pod (after spawn_error_after_s)
    no_heartbeat_rate: float = 0.03  # pod runs but the worker never heartbeats (hits spawn_timeout_s)
    spawn_error_after_s: float = 20.0
    terminate_delay_s: float = 5.0  # terminate request to provider confirming the pod gone
    # The warm pool. Resume request to the worker's first heartbeat after it (the syntax of `boot`).
    resume: str = "uniform:20:60"
    resume_error_rate: float = 0.1  # the host's GPUs were taken while stopped: the provider refuses
    resume_error_after_s: float = 2.0
    stop_delay_s: float = 5.0  # stop request to provider confirming the pod stopped (GPU billed meanwhile)
    # GPU-seconds billed per second a pod sits stopped: its volume disk (50 GB at $0.20/GB/month is
    # about 2% of a $0.69/h RTX 4090).
    stopped_cost_share: float = 0.02
    poll_interval_s: float = 5.0  # each WorkerLifecycle's poll period
    # A new task to the Scaler that waits for one: reigh's probe period (`queue.new_task_probe_s`);
    # NOTIFY is sooner. Only policies that wake on tasks (`Policy.wake_debounce_s`) use it.
    # None: no wake-up, every policy runs on its timer alone (reigh with `new_task_probe_s: 0`).
    new_task_seen_s: float | None = NEW_TASK_SEEN_S
    tail_s: float = 900.0
    max_sim_s: float = 7 * 86_400.0  # safety stop

    def boot_sampler(self) -> Callable[[random.Random], float]:
        return _sampler(self.boot, "boot")

    def resume_sampler(self) -> Callable[[random.Random], float]:
        return _sampler(self.resume, "resume")

    def boot_floor_s(self) -> float:
        """The fastest boot the distribution can draw (lognormal has no floor above 0)."""
        self.boot_sampler()  # validates the spec
        kind, *args = self.boot.split(":")
        if kind == "uniform":
            return min(float(a) for a in args)
        if kind == "fixed":
            return float(args[0])
        return 0.0

    def spawn_draws(self) -> Iterator[tuple[float, str | None]]:
        """The world's pods in spawn order: `(boot seconds, fault)` of the 1st, 2nd, ... spawn.

        The j-th spawn of every policy gets the j-th draw (its own seeded generator, used for
        nothing else), so a clairvoyant reference (`sim.oracle`) knows the pods a policy will get.
        Fault is None, `spawn_error` (the provider refuses) or `no_heartbeat` (never heartbeats).
        """
        rng = random.Random(self.seed)
        sample = self.boot_sampler()
        while True:
            boot = sample(rng)
            roll = rng.random()
            fault: str | None = None
            if roll < self.spawn_error_rate:
                fault = "spawn_error"
            elif roll < self.spawn_error_rate + self.no_heartbeat_rate:
                fault = "no_heartbeat"
            yield boot, fault

    def resume_draws(self) -> Iterator[tuple[float, bool]]:
        """The world's resumes in resume order: `(resume seconds, refused)` of the 1st, 2nd, ... resume.

        Like `spawn_draws`, the j-th resume of every policy gets the j-th draw, from a generator of
        its own (a refused resume draws its seconds too, so the draws after it stay in place).
        """
        rng = random.Random(f"resume:{self.seed}")
        sample = self.resume_sampler()
        while True:
            seconds = sample(rng)
            yield seconds, rng.random() < self.resume_error_rate


@dataclass
class _Task:
    spec: TraceTask
    status: str = "pending"  # pending (not arrived) | queued | running | done
    ready_at: float | None = None  # arrived and dependency done
    claimed_at: float | None = None  # first claim
    done_at: float | None = None
    worker: str | None = None
    run_started: float | None = None


@dataclass
class _Worker:
    id: str
    created_at: float
    boot_s: float
    fault: str | None  # None | "spawn_error" | "no_heartbeat"
    state: WorkerState = WorkerState.SPAWNING
    state_since: float = 0.0
    pod: lifecycle.PodPhase = lifecycle.PodPhase.PENDING
    provider_error: str | None = None
    last_hb: float | None = None
    promoted_at: float | None = None
    idle_since: float | None = None
    tasks: set[int] = field(default_factory=set)
    drain_requested: bool = False
    park_requested: bool = False
    resume_requested: bool = False
    terminate_requested: bool = False
    retire_requested: bool = False
    scaled_down_at: float | None = None  # the drain (or park) request of its current stint
    gone_at: float | None = None
    tasks_run: int = 0
    runs: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of its task runs
    # GPU billing: when its current stint began (None while stopped or gone), the first heartbeat
    # within it, and the stints already over.
    stint_start: float | None = None
    stint_promoted: float | None = None
    stints: list[GpuStint] = field(default_factory=list)


# ---- events, ordered by (time, push sequence): the sequence breaks ties, so runs are reproducible


@dataclass(frozen=True, slots=True)
class _Arrival:
    task: int  # its arrival time has come


@dataclass(frozen=True, slots=True)
class _TaskDone:
    task: int
    worker: str
    started: float  # the run this completes; a requeued task's earlier run finishes nothing


@dataclass(frozen=True, slots=True)
class _PodRunning:
    worker: str  # the pod finished booting


@dataclass(frozen=True, slots=True)
class _SpawnError:
    worker: str  # the provider refused the pod


@dataclass(frozen=True, slots=True)
class _PodGone:
    worker: str  # the provider confirmed the pod gone


@dataclass(frozen=True, slots=True)
class _PodStopped:
    worker: str  # the provider confirmed the parked pod stopped


@dataclass(frozen=True, slots=True)
class _PodResumed:
    worker: str  # the resumed pod runs again


@dataclass(frozen=True, slots=True)
class _ResumeRefused:
    worker: str  # the provider refused the resume: the host's GPUs were taken


@dataclass(frozen=True, slots=True)
class _Poll:
    """Every WorkerLifecycle polls its pod."""


@dataclass(frozen=True, slots=True)
class _Cycle:
    """The Scaler runs one policy cycle: on its timer (`timer`, the number of the cycle that set
    it, stale once a woken cycle ran since) or woken by a new task (`timer` None)."""

    timer: int | None


_Event = (
    _Arrival
    | _TaskDone
    | _PodRunning
    | _SpawnError
    | _PodGone
    | _PodStopped
    | _PodResumed
    | _ResumeRefused
    | _Poll
    | _Cycle
)


class _Sim:
    def __init__(self, trace: Sequence[TraceTask], pol: Policy, config: ScalingSettings, params: SimParams) -> None:
        self.pol, self.config, self.params = pol, config, params
        self.draws = params.spawn_draws()
        self.resume_draws = params.resume_draws()
        self.claim_rng = random.Random(params.seed + 7919)
        self.tasks = [_Task(t) for t in trace]
        self.children: dict[int, list[int]] = defaultdict(list)
        for t in trace:
            if t.depends_on is not None:
                self.children[t.depends_on].append(t.index)
        self.workers: dict[str, _Worker] = {}
        self.queue: list[int] = []  # queued task indexes, FIFO by ready_at
        self.user_running: Counter[str] = Counter()
        self.events: list[tuple[float, int, _Event]] = []
        self.seq = 0
        self.now = 0.0
        self.history = FleetHistory()
        self.pending_outcomes: list[SpawnOutcome] = []
        self.remaining = len(self.tasks)
        self.busy_s = 0.0
        self.spawns = self.failed_spawns = self.terminations = self.short_lived = self.beyond = 0
        self.resumes = self.resume_failures = self.parks = 0
        self.peak = self.on_gpu = 0  # most pods with their GPU billed at once; how many now
        self.timeline: list[dict[str, float | int]] = []
        self.waits: list[tuple[float, float]] = []
        self.reasons: list[tuple[float, str]] = []
        self.runs: list[tuple[float, float]] = []  # (start, end) of every task run, interrupted ones too
        self.wake_debounce_s = pol.wake_debounce_s(config)
        self.cycles = 0
        self.wake_pending = False
        self.last_woken_at: float | None = None

    # ---- event plumbing
    def push(self, at: float, event: _Event) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, event))

    # ---- tasks
    def _arrive_or_ready(self, idx: int) -> None:
        task = self.tasks[idx]
        dep = task.spec.depends_on
        if task.status != "pending" or self.now < task.spec.arrival_s:
            return
        if dep is not None and self.tasks[dep].status != "done":
            return
        task.status = "queued"
        task.ready_at = self.now
        self.queue.append(idx)

    def _claimable(self) -> list[int]:
        limit = self.config.per_user_concurrency_limit
        used: Counter[str] = Counter(self.user_running)
        out = []
        for idx in self.queue:
            user = self.tasks[idx].spec.user_id
            if used[user] < limit:
                used[user] += 1
                out.append(idx)
        return out

    def _dispatch(self, first: _Worker | None = None) -> None:
        if not self.queue:
            return
        free = [
            w
            for w in self.workers.values()
            if w.state is WorkerState.ACTIVE and len(w.tasks) < self.config.tasks_per_worker
        ]
        if not free:
            return
        # Idle workers poll independently: which one claims a new task is a coin toss (own RNG, so
        # claims never shift the spawn draws). A worker that just finished claims first (see
        # _task_done): its poll loop is already running.
        free.sort(key=lambda w: w.id)
        self.claim_rng.shuffle(free)
        if first is not None and first in free:
            free.remove(first)
            free.insert(0, first)
        limit = self.config.per_user_concurrency_limit
        for w in free:
            while len(w.tasks) < self.config.tasks_per_worker:
                pick = next((i for i in self.queue if self.user_running[self.tasks[i].spec.user_id] < limit), None)
                if pick is None:
                    return
                self.queue.remove(pick)
                task = self.tasks[pick]
                task.status, task.worker, task.run_started = "running", w.id, self.now
                if task.claimed_at is None:
                    task.claimed_at = self.now
                    assert task.ready_at is not None
                    self.waits.append((self.now, self.now - task.ready_at))
                self.user_running[task.spec.user_id] += 1
                w.tasks.add(pick)
                w.idle_since = None
                w.tasks_run += 1
                self.push(self.now + task.spec.duration_s, _TaskDone(pick, w.id, self.now))

    def _task_done(self, idx: int, wid: str, started: float) -> None:
        task = self.tasks[idx]
        if task.status != "running" or task.worker != wid or task.run_started != started:
            return  # the run was interrupted (requeued) before it finished
        self.busy_s += self.now - started
        self.runs.append((started, self.now))
        self.workers[wid].runs.append((started, self.now))
        task.status, task.done_at = "done", self.now
        self.user_running[task.spec.user_id] -= 1
        self.remaining -= 1
        w = self.workers[wid]
        w.tasks.discard(idx)
        if not w.tasks:
            w.idle_since = self.now
        if w.state is WorkerState.DRAINING:
            self._step_worker(w)
        for child in self.children.get(idx, []):
            self._arrive_or_ready(child)
        self._dispatch(first=w)

    def _requeue(self, w: _Worker) -> None:
        for idx in sorted(w.tasks):
            task = self.tasks[idx]
            if task.run_started is not None:
                self.busy_s += self.now - task.run_started
                self.runs.append((task.run_started, self.now))
                w.runs.append((task.run_started, self.now))
            task.status, task.worker, task.run_started = "queued", None, None
            self.user_running[task.spec.user_id] -= 1
            self.queue.append(idx)
        w.tasks.clear()

    # ---- workers
    def _spawn(self) -> None:
        wid = f"sim-{len(self.workers) + 1:05d}"
        boot, fault = next(self.draws)
        w = _Worker(wid, self.now, boot, fault, state_since=self.now, stint_start=self.now)
        self.workers[wid] = w
        self.spawns += 1
        self.on_gpu += 1
        if fault == "spawn_error":
            self.push(self.now + self.params.spawn_error_after_s, _SpawnError(wid))
        else:
            self.push(self.now + boot, _PodRunning(wid))

    def _resume(self, w: _Worker) -> None:
        if w.state is not WorkerState.STOPPED:
            return  # only a stopped pod can be resumed; the request is for this cycle only
        w.resume_requested = True
        self._step_worker(w)
        w.resume_requested = False

    def _end_stint(self, w: _Worker) -> None:
        """The provider confirmed the pod stopped (or gone): its GPU is no longer billed."""
        if w.stint_start is None:
            return
        w.stints.append(GpuStint(w.stint_start, w.stint_promoted, w.scaled_down_at, self.now, resumed=bool(w.stints)))
        w.stint_start = None
        self.on_gpu -= 1

    def _observe(self, w: _Worker) -> lifecycle.Observation:
        return lifecycle.Observation(
            pod_phase=w.pod,
            last_heartbeat_at=w.last_hb,
            tasks_in_progress=len(w.tasks),
            drain_requested=w.drain_requested,
            terminate_requested=w.terminate_requested,
            retire_requested=w.retire_requested,
            park_requested=w.park_requested,
            resume_requested=w.resume_requested,
            provider_error=w.provider_error,
        )

    def _step_worker(self, w: _Worker) -> None:
        if w.pod is lifecycle.PodPhase.RUNNING and w.fault is None and w.state is not WorkerState.TERMINATING:
            w.last_hb = self.now  # a live worker heartbeats every few seconds
        for _ in range(4):  # error -> terminating may follow in the same poll
            tr = lifecycle.next_transition(
                w.state,
                self._observe(w),
                now=self.now,
                created_at=w.created_at,
                state_since=w.state_since,
                config=self.config,
            )
            if tr is None:
                return
            self._apply(w, tr)

    def _apply(self, w: _Worker, tr: lifecycle.Transition) -> None:
        old = w.state
        w.state, w.state_since = tr.to, self.now
        if tr.outcome is not None:
            boot = self.now - w.created_at if tr.to is WorkerState.ACTIVE else None
            self.pending_outcomes.append(SpawnOutcome(w.id, tr.outcome, self.now, boot))
            if tr.outcome.is_failure():
                self.failed_spawns += 1
        if tr.to is WorkerState.ACTIVE:
            w.promoted_at = w.idle_since = w.stint_promoted = self.now
            self._dispatch()
        elif tr.to in (WorkerState.ERROR, WorkerState.TERMINATING, WorkerState.STOPPING) and w.tasks:
            self._requeue(w)
            self._dispatch()
        # A park is a scale-down like a termination: a pod parked soon after its promotion (a
        # resume's too) was given up as soon as it was up.
        ending = tr.to is WorkerState.STOPPING or (tr.to is WorkerState.TERMINATING and old in _SCALED_DOWN_FROM)
        if ending and w.promoted_at is not None and w.scaled_down_at is not None:
            self.short_lived += int(w.scaled_down_at - w.promoted_at < SHORT_LIFE_S)
        if tr.to is WorkerState.STOPPING:
            self.parks += 1
            self.push(self.now + self.params.stop_delay_s, _PodStopped(w.id))
        elif tr.to is WorkerState.RESUMING:
            self._resumed(w)
        elif tr.to is WorkerState.ERROR and old is WorkerState.RESUMING:
            self.resume_failures += 1
        elif tr.to is WorkerState.TERMINATING:
            # No pod (a refused spawn) is gone at once; a stopped one is terminated like a running one.
            gone = self.now if w.pod is lifecycle.PodPhase.NONE else self.now + self.params.terminate_delay_s
            self.push(gone, _PodGone(w.id))
        elif tr.to is WorkerState.TERMINATED:
            self.terminations += 1

    def _resumed(self, w: _Worker) -> None:
        """The resume was asked: the GPU is billed again, the pod runs after its drawn resume time."""
        self.resumes += 1
        w.drain_requested = w.park_requested = False
        w.scaled_down_at = w.stint_promoted = None
        w.stint_start = self.now
        self.on_gpu += 1
        seconds, refused = next(self.resume_draws)
        if refused:
            self.push(self.now + self.params.resume_error_after_s, _ResumeRefused(w.id))
        else:
            self.push(self.now + seconds, _PodResumed(w.id))

    def _held(self, w: _Worker) -> tuple[float | None, str | None]:
        """What the queue says of the oldest task a worker holds: when it was claimed, its type."""
        held = [self.tasks[i] for i in w.tasks]
        if not held:
            return None, None
        oldest = min(held, key=lambda t: (t.run_started or 0.0, t.spec.index))
        return oldest.run_started, oldest.spec.task_type

    def _view(self, w: _Worker) -> WorkerView:
        task_started_at, task_type = self._held(w)
        return WorkerView(
            id=w.id,
            state=w.state,
            created_at=w.created_at,
            promoted_at=w.promoted_at,
            last_heartbeat_at=w.last_hb,
            tasks_in_progress=len(w.tasks),
            idle_since=w.idle_since,
            task_started_at=task_started_at,
            task_type=task_type,
            state_since=w.state_since,
        )

    def _views(self) -> list[WorkerView]:
        return [self._view(w) for w in self.workers.values() if w.state is not WorkerState.TERMINATED]

    def _cycle(self) -> None:
        claimable = len(self._claimable())
        in_progress = sum(self.user_running.values())
        snapshot = DemandSnapshot(
            queued=len(self.queue), claimable=claimable, in_progress=in_progress, taken_at=self.now
        )
        views = self._views()
        self.history = policy.record_outcomes(self.history, self.pending_outcomes, self.now, self.config)
        self.pending_outcomes = []
        decision = self.pol.decide(policy.PolicyContext(snapshot, views, self.history, self.config, self.now))
        self.history = decision.history
        capacity = sum(1 for v in views if v.state.counts_as_capacity())
        on_capacity = sum(v.tasks_in_progress for v in views if v.state.counts_as_capacity())
        demand_workers = math.ceil((claimable + on_capacity) / self.config.tasks_per_worker)
        # A resume beyond demand bills a GPU for nothing just as a spawn does.
        ups = decision.spawn + len(decision.resume)
        self.beyond += max(0, ups - max(0, demand_workers - capacity))
        for wid in decision.resume:  # before any spawn, as the Scaler does
            self._resume(self.workers[wid])
        for _ in range(decision.spawn):
            self._spawn()
        parked = set(decision.park)
        for wid in decision.drain:
            w = self.workers[wid]
            if w.state in WorkerState.booting():
                w.terminate_requested = True
            elif w.state is WorkerState.ACTIVE:
                w.drain_requested = True
                w.park_requested = wid in parked
                w.scaled_down_at = self.now
            self._step_worker(w)
        for wid in decision.retire:
            w = self.workers[wid]
            if w.state is WorkerState.STOPPED:
                w.retire_requested = True
                self._step_worker(w)
        if decision.changes_something:
            self.reasons.extend((self.now, r) for r in decision.reasons)
        by_state = Counter(v.state for v in self._views())
        row: dict[str, float | int] = {
            "t": self.now,
            "queued": len(self.queue),
            "claimable": claimable,
            "in_progress": in_progress,
            "spawn": decision.spawn,
            "drain": len(decision.drain),
            "resume": len(decision.resume),
        }
        for s in WorkerState:
            if not s.is_terminal():
                row[s.value] = by_state.get(s, 0)
        self.timeline.append(row)

    def _wake(self) -> None:
        """A new task wakes a Scaler that waits for one (NOTIFY, or reigh's probe) after
        `new_task_seen_s`, no sooner than `wake_debounce_s` after the last woken cycle."""
        seen_after = self.params.new_task_seen_s
        if self.wake_debounce_s is None or seen_after is None or self.wake_pending:
            return
        at = self.now + seen_after
        if self.last_woken_at is not None:
            at = max(at, self.last_woken_at + self.wake_debounce_s)
        self.wake_pending = True
        self.push(at, _Cycle(None))

    def _handle(self, event: _Event, interval: float) -> None:
        match event:
            case _Arrival(task=idx):
                self._arrive_or_ready(idx)
                self._wake()
            case _TaskDone(task=idx, worker=wid, started=started):
                self._task_done(idx, wid, started)
            case _PodRunning(worker=wid):
                w = self.workers[wid]
                if w.state in (WorkerState.SPAWNING,) and w.pod is lifecycle.PodPhase.PENDING:
                    w.pod = lifecycle.PodPhase.RUNNING
                    self._step_worker(w)
            case _SpawnError(worker=wid):
                w = self.workers[wid]
                if w.state is WorkerState.SPAWNING:
                    w.pod, w.provider_error = (
                        lifecycle.PodPhase.NONE,
                        "no capacity for any GPU type in the fallback list",
                    )
                    self._step_worker(w)
            case _PodGone(worker=wid):
                w = self.workers[wid]
                if w.gone_at is None:
                    w.gone_at, w.pod = self.now, lifecycle.PodPhase.GONE
                    self._end_stint(w)
                    self._step_worker(w)
            case _PodStopped(worker=wid):
                w = self.workers[wid]
                if w.state is WorkerState.STOPPING and w.pod is lifecycle.PodPhase.RUNNING:
                    w.pod = lifecycle.PodPhase.EXITED
                    self._end_stint(w)
                    self._step_worker(w)
            case _PodResumed(worker=wid):
                w = self.workers[wid]
                if w.state is WorkerState.RESUMING and w.pod is lifecycle.PodPhase.EXITED:
                    w.pod = lifecycle.PodPhase.RUNNING
                    self._step_worker(w)
            case _ResumeRefused(worker=wid):
                w = self.workers[wid]
                if w.state is WorkerState.RESUMING:
                    w.provider_error = RESUME_REFUSED
                    self._end_stint(w)  # the pod stays stopped: only its disk is billed until it is gone
                    self._step_worker(w)
            case _Poll():
                for w in list(self.workers.values()):
                    if w.state is not WorkerState.TERMINATED:
                        self._step_worker(w)
                self.push(self.now + self.params.poll_interval_s, _Poll())
            case _Cycle(timer=timer):
                if timer is None:
                    self.wake_pending, self.last_woken_at = False, self.now
                elif timer != self.cycles:
                    return  # a woken cycle ran since this timer was set; the Scaler waits afresh
                self._cycle()
                self.cycles += 1
                self.push(self.now + interval, _Cycle(self.cycles))

    def run(self) -> SimResult:
        for t in self.tasks:
            self.push(t.spec.arrival_s, _Arrival(t.spec.index))
        interval = self.pol.cycle_interval_s(self.config)
        self.push(0.0, _Cycle(0))
        self.push(0.0, _Poll())
        end: float | None = None
        while self.events:
            at, _, event = heapq.heappop(self.events)
            if end is not None and at > end:
                break
            if at > self.params.max_sim_s:
                end = self.now
                break
            self.now = at
            self._handle(event, interval)
            self._dispatch()
            self.peak = max(self.peak, self.on_gpu)
            if end is None and self.remaining == 0:
                end = self.now + self.params.tail_s
        finish = end if end is not None else self.now
        return self._result(finish)

    def _pod_life(self, w: _Worker, end: float) -> PodLife:
        stints = list(w.stints)
        if w.stint_start is not None:  # its GPU still billed at the run's end
            promoted = min(w.stint_promoted, end) if w.stint_promoted is not None else None
            stints.append(GpuStint(w.stint_start, promoted, w.scaled_down_at, end, resumed=bool(w.stints)))
        return PodLife(
            w.id,
            w.created_at,
            stints[0].promoted_at,
            stints[0].scaled_down_at,
            min(w.gone_at, end) if w.gone_at is not None else end,
            tuple(sorted(w.runs)),
            tuple(stints),
            self.params.stopped_cost_share,
        )

    def _result(self, end: float) -> SimResult:
        for t in self.tasks:  # runs still going at the end count as busy up to the end
            if t.status == "running" and t.run_started is not None:
                self.busy_s += end - t.run_started
                self.runs.append((t.run_started, end))
                if t.worker is not None:
                    self.workers[t.worker].runs.append((t.run_started, end))
        waits = [w for _, w in self.waits]
        waits += [end - t.ready_at for t in self.tasks if t.claimed_at is None and t.ready_at is not None]
        done = sum(1 for t in self.tasks if t.status == "done")
        pods = [self._pod_life(w, end) for w in self.workers.values()]
        billed = sum(p.billed_gpu_s for p in pods)
        stopped = sum(p.stopped_cost_share * p.stopped_s for p in pods)
        figures: Figures = {
            "tasks": len(self.tasks),
            "tasks_done": done,
            "billed_gpu_s": round(billed, 1),
            "busy_gpu_s": round(self.busy_s, 1),
            "billed_per_busy": round(billed / self.busy_s, 3) if self.busy_s else 0.0,
            "wait_p50_s": round(percentile(waits, 50), 1),
            "wait_p95_s": round(percentile(waits, 95), 1),
            "wait_p99_s": round(percentile(waits, 99), 1),
            "spawns": self.spawns,
            "failed_spawns": self.failed_spawns,
            "terminations": self.terminations,
            "peak_workers": self.peak,  # pods with their GPU billed at once (a stopped pod's is not)
            "killed_within_2min_of_promotion": self.short_lived,
            "spawns_beyond_demand": self.beyond,
            "sim_end_s": round(end, 1),
            # The warm pool: drained pods stopped, resumes asked (and refused), the disk of stopped pods.
            "parks": self.parks,
            "resumes": self.resumes,
            "resume_failures": self.resume_failures,
            "stopped_billed_gpu_s": round(stopped, 1),
            "stopped_at_end": sum(1 for w in self.workers.values() if w.state is WorkerState.STOPPED),
        }
        return SimResult(self.pol.name, figures, self.timeline, self.waits, self.reasons, self.runs, pods)


def sim_scaling(overrides: Mapping[str, float | int] | None = None) -> ScalingSettings:
    """The default policy's config in the simulator: production defaults plus the tuned overrides."""
    values = dict(SIM_SCALING_OVERRIDES)
    values.update(overrides or {})
    return ScalingSettings.model_validate(values)


def simulate(
    trace: Sequence[TraceTask], pol: Policy, config: ScalingSettings, params: SimParams | None = None
) -> SimResult:
    """Run one simulation. `pol` must be a fresh policy object (baselines keep bookkeeping)."""
    return _Sim(trace, pol, config, params or SimParams()).run()


def run(
    trace_path: str | Path,
    policy_name: str = "default",
    config: ScalingSettings | None = None,
    params: SimParams | None = None,
) -> SimResult:
    """Load a trace and simulate one named policy (`default`, `seed`, `keda`)."""
    return simulate(load_trace(trace_path), make_policy(policy_name), config or sim_scaling(), params)
