"""Plain data of the fleet domain: worker states, what the Scaler observes, what it decides.

No I/O and no clock reads here; times are POSIX seconds (float) passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "BreakerState",
    "BreakerStatus",
    "Decision",
    "DecisionKind",
    "DemandMemory",
    "DemandSnapshot",
    "FleetHistory",
    "SpawnOutcome",
    "SpawnOutcomeKind",
    "WorkerState",
    "WorkerView",
]


class WorkerState(StrEnum):
    SPAWNING = "spawning"  # row written, pod requested or booting, no heartbeat yet
    ACTIVE = "active"  # pod running and the worker has heartbeated: it may claim tasks
    DRAINING = "draining"  # claims nothing new; finishes what it holds
    STOPPING = "stopping"  # drained into the warm pool: stop asked of the provider, not yet confirmed
    STOPPED = "stopped"  # pod stopped, kept for a quick resume: no GPU billed, its disk is; not capacity
    RESUMING = "resuming"  # resume asked of the provider, no heartbeat since: capacity on its way
    TERMINATING = "terminating"  # terminate asked of the provider, not yet confirmed gone
    TERMINATED = "terminated"  # the provider confirmed the pod is gone
    ERROR = "error"  # spawn failed, spawn timed out, or heartbeat lost; terminated next

    @classmethod
    def terminal(cls) -> frozenset[WorkerState]:
        """States a worker never leaves."""
        return frozenset({cls.TERMINATED})

    @classmethod
    def live(cls) -> frozenset[WorkerState]:
        """States in which a pod may exist and costs money."""
        return frozenset(set(cls) - cls.terminal())

    @classmethod
    def capacity(cls) -> frozenset[WorkerState]:
        """States that count as capacity for demand: a spawning or resuming worker is capacity on its way."""
        return frozenset({cls.SPAWNING, cls.RESUMING, cls.ACTIVE})

    @classmethod
    def booting(cls) -> frozenset[WorkerState]:
        """Capacity on its way: a new pod or a resumed one, not yet heartbeating."""
        return frozenset({cls.SPAWNING, cls.RESUMING})

    def counts_as_capacity(self) -> bool:
        return self in WorkerState.capacity()

    def is_terminal(self) -> bool:
        return self in WorkerState.terminal()


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What the policy knows of one worker."""

    id: str
    state: WorkerState
    created_at: float
    gpu_type: str | None = None
    promoted_at: float | None = None
    last_heartbeat_at: float | None = None
    tasks_in_progress: int = 0
    # When the worker last had no task after having one (or was promoted); None while busy.
    idle_since: float | None = None
    pod_id: str | None = None
    # When the worker claimed the oldest task it holds, and that task's type; None while idle (or
    # when the queue does not say). The policy learns task durations per type from them.
    task_started_at: float | None = None
    task_type: str | None = None
    # When the worker entered its state (a stopped worker: when its pod stopped).
    state_since: float | None = None


@dataclass(frozen=True, slots=True)
class DemandSnapshot:
    """Task counts read in one query."""

    queued: int  # status Queued, whatever their dependency or user
    claimable: int  # Queued, dependency done, and within the per-user concurrency limit
    in_progress: int  # status In Progress
    taken_at: float = 0.0
    # What the queue says of the rest, recorded with the decision (reigh: the app's own breakdown:
    # blocked_by_capacity, blocked_by_deps, blocked_by_settings, eligible_with_active).
    breakdown: tuple[tuple[str, int], ...] = ()


class SpawnOutcomeKind(StrEnum):
    BOOTED = "booted"  # reached active: a success
    SPAWN_ERROR = "spawn_error"  # the provider refused or failed to create the pod
    SPAWN_TIMEOUT = "spawn_timeout"  # no first heartbeat within the spawn timeout
    HEARTBEAT_LOST = "heartbeat_lost"  # active, then silent past the heartbeat timeout

    def is_failure(self) -> bool:
        return self is not SpawnOutcomeKind.BOOTED


@dataclass(frozen=True, slots=True)
class SpawnOutcome:
    """How one spawn ended. Normal scale-downs are not outcomes: they never count as failures."""

    worker_id: str
    kind: SpawnOutcomeKind
    at: float
    boot_seconds: float | None = None  # created to first heartbeat, for BOOTED


class BreakerStatus(StrEnum):
    CLOSED = "closed"  # spawns allowed
    OPEN = "open"  # failure rate too high: no spawns until the cooldown ends
    HALF_OPEN = "half_open"  # cooldown over: one probe spawn may go; its outcome decides


@dataclass(frozen=True, slots=True)
class BreakerState:
    status: BreakerStatus = BreakerStatus.CLOSED
    opened_at: float | None = None
    probe_worker_id: str | None = None
    failure_rate: float = 0.0
    attempts_in_window: int = 0
    # When the HALF_OPEN probe spawn was issued; the probe is the first worker created at or after it.
    probe_issued_at: float | None = None
    # Outcomes before this are ignored by the rate: set when a probe closes the breaker, so the
    # failures that opened it do not reopen it at once.
    counting_since: float | None = None
    failures_in_window: int = 0


@dataclass(frozen=True, slots=True)
class DemandMemory:
    """What the policy has learned of the workload (`fleet.learning`); rebuilt after a restart."""

    # (t, demand) each time demand (claimable + in progress on capacity) changed, oldest first.
    points: tuple[tuple[float, int], ...] = ()
    # task type -> lengths of its most recent runs, seconds.
    durations: tuple[tuple[str, tuple[float, ...]], ...] = ()
    # (worker id, task_started_at, task type) of each busy worker last cycle: how runs are seen to end.
    holding: tuple[tuple[str, float, str], ...] = ()
    # When each claimable task was first seen claimable, oldest first (FIFO: claims take the oldest):
    # how long the queued tasks have waited, which the snapshot's counts do not say.
    queued_since: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class FleetHistory:
    """What the policy remembers between cycles; the Scaler stores it and passes it back."""

    outcomes: tuple[SpawnOutcome, ...] = ()
    last_scale_up_at: float | None = None
    last_scale_down_at: float | None = None
    breaker: BreakerState = field(default_factory=BreakerState)
    # Recent demand arrival timestamps help tell "work keeps arriving" from "the queue is done".
    last_demand_at: float | None = None
    # Measured boot times (created to first heartbeat) of the most recent BOOTED outcomes; kept
    # apart from `outcomes` so the boot estimate outlives the failure window.
    boot_samples: tuple[float, ...] = ()
    # What the policy learned of the workload: demand rises and task durations (fleet.learning).
    learned: DemandMemory = field(default_factory=DemandMemory)
    # Warm pool: (worker id, when it entered resuming) of the workers resuming last cycle, and the
    # measured resumes (resuming to active) of the most recent ones, for the resume estimate.
    resuming: tuple[tuple[str, float], ...] = ()
    resume_samples: tuple[float, ...] = ()


class DecisionKind(StrEnum):
    """What a decision amounts to, as the policy decided it: stored with the decision, so `explain`
    never parses it back out of the reasons' words."""

    SCALE_UP = "scale_up"  # spawn or resume for demand (perhaps fewer than needed: the reasons say what limited it)
    PROBE = "probe"  # breaker half-open: the one probe spawn
    SCALE_DOWN = "scale_down"  # drain idle workers (some parked in the warm pool), retire stopped ones
    STEADY = "steady"  # capacity matches what demand asks for: nothing wanted
    CAPPED = "capped"  # demand asks for more workers, but max_workers (draining pods count) leaves no room
    BREAKER_OPEN = "breaker_open"  # demand asks for more workers, but the breaker is open: no spawn
    PROBE_PENDING = "probe_pending"  # demand asks for more, but the half-open breaker waits for its probe
    SCALE_DOWN_HELD = "scale_down_held"  # a surplus, kept for now (stabilization, idle time, busy workers)

    def changes_fleet(self) -> bool:
        return self in (DecisionKind.SCALE_UP, DecisionKind.PROBE, DecisionKind.SCALE_DOWN)


@dataclass(frozen=True, slots=True)
class Decision:
    """One cycle's verdict: spawn this many, drain these, what kind of decision that is, and why.

    With a warm pool: `resume` names stopped workers to start again (before any spawn), `park` the
    drained workers whose pods are stopped for a later resume instead of terminated (a subset of
    `drain`), and `retire` the stopped workers to terminate (pool over its size, or kept too long).
    """

    spawn: int
    drain: tuple[str, ...]
    reasons: tuple[str, ...]
    breaker: BreakerState
    desired: int
    capacity: int
    inputs: dict[str, float | int | str | None] = field(default_factory=dict)
    history: FleetHistory = field(default_factory=FleetHistory)
    kind: DecisionKind = DecisionKind.STEADY
    resume: tuple[str, ...] = ()
    park: tuple[str, ...] = ()
    retire: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A decision that spawns or drains is never "steady", whoever built it (the baselines too).
        if self.kind is DecisionKind.STEADY and self.changes_something:
            up = self.spawn or self.resume
            object.__setattr__(self, "kind", DecisionKind.SCALE_UP if up else DecisionKind.SCALE_DOWN)
        stray = set(self.park) - set(self.drain)
        if stray:
            raise ValueError(f"park names workers not drained: {', '.join(sorted(stray))}")

    @property
    def changes_something(self) -> bool:
        return self.spawn > 0 or bool(self.drain) or bool(self.resume) or bool(self.retire)
