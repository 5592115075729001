"""The pod lifecycle state machine: one explicit transition table and one pure step function.

`next_transition(current, observation, now=..., ...)` says where a worker goes next and why, or
None to stay. The WorkerLifecycle actor only executes what it returns and records the reason in
`worker_events`; `check_transition` refuses any move the table does not list, so a bug elsewhere
can never, say, resurrect a terminated worker or skip the drain of a busy one.

Reasons are `"<code>: <words and numbers>"`. The code is a stable snake_case word that tools (and
`fleet.policy.outcomes_from_events`) parse; the words are for people.

Choices worth knowing:
- Promotion needs the pod RUNNING *and* a first real heartbeat, i.e. one at or after the worker's
  creation (the replaced system defaulted the heartbeat column to now(), so new rows looked alive).
- An operator's terminate request drains a busy active worker (its tasks finish, bounded by
  drain_timeout_s) and terminates an idle or still-spawning one at once.
- `terminating -> terminated` needs the provider to confirm the pod is GONE. The actor reports
  GONE when a lookup by the pod's name finds nothing; NONE ("never asked") is not a confirmation.
- A pod that exits or vanishes under an active worker *holding a task* is `lost_with_task`, not
  `pod_lost`: the task is the first suspect (out of memory, a segfault: the poison-task signature),
  so the loss counts against the task (its attempts; `requeue_worker_tasks` fails it at
  max_task_attempts) and is no spawn outcome, so one user's poison task never opens the breaker
  for everyone else's work. The spawn already counted as BOOTED. An idle worker's pod that dies is
  the fleet's failure (`pod_lost`), and so is heartbeat silence with the pod still running (the
  worker heartbeats from a thread of its own, so a task cannot silence it; the network or the host
  can), as is a crash the worker reports itself (reigh: the app requeues its tasks with that report).
- Heartbeat silence counts from `Observation.silence_counts_from` at the earliest: the moment the
  database came back after an outage (no worker could heartbeat while it was down). A worker booting
  through an outage gets a heartbeat timeout after it, whatever its spawn timeout said meanwhile.
  A verdict that rests on silence alone is marked (`Transition.heartbeat_silence`) so that the actor
  can hold it when many workers are silent at once (fleet.supervision.fleet_silence).
- The warm pool: a scale-down may park a drained pod (`stopping` -> `stopped`: the provider stops it,
  its disk is kept) instead of terminating it, and a stopped pod may be resumed (`resuming` ->
  `active`). A resume is not a spawn: neither its promotion nor its failure is a spawn outcome, so
  a host whose GPUs were taken meanwhile never opens the breaker; a failed resume is terminated and
  demand gets a new pod. Only a heartbeat sent after the resume counts (the row keeps the last one
  from before the stop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from config.settings import ScalingSettings
from fleet.models import SpawnOutcomeKind, WorkerState

__all__ = [
    "LOST_WITH_TASK",
    "PARK_REQUESTED",
    "TRANSITIONS",
    "IllegalTransition",
    "Observation",
    "PodPhase",
    "Transition",
    "check_transition",
    "drain_parks",
    "next_transition",
    "reason_code",
]


class PodPhase(StrEnum):
    """The provider's pod status as the state machine sees it."""

    NONE = "none"  # no pod created yet (or not yet looked up)
    PENDING = "pending"  # created, image pulling / container starting
    RUNNING = "running"  # the container runs; the worker process may not be up yet
    EXITED = "exited"  # the container stopped on its own (crash, OOM, preemption)
    GONE = "gone"  # the provider has no such pod: terminated and confirmed
    UNKNOWN = "unknown"  # the provider could not be asked this time (API error): decide nothing from it


@dataclass(frozen=True, slots=True)
class Observation:
    """Facts about one worker gathered by its lifecycle actor in one poll."""

    pod_phase: PodPhase
    last_heartbeat_at: float | None  # None until the worker's first real heartbeat
    tasks_in_progress: int = 0
    drain_requested: bool = False  # the Scaler asked this worker to drain (scale-down)
    terminate_requested: bool = False  # operator asked for termination (`orchestrator down --terminate-pods`)
    # The drain parks the pod in the warm pool (stop it for a later resume) instead of terminating it.
    park_requested: bool = False
    resume_requested: bool = False  # the Scaler asked a stopped worker to start again
    retire_requested: bool = False  # the Scaler takes a stopped worker out of the warm pool
    # The provider accepted the stop of this pod (an exited container alone is not a stopped pod).
    stop_accepted: bool = True
    provider_error: str | None = None  # pod creation failed for good (after fallbacks/retries)
    # The worker itself said it died (reigh: its guardian wrote status 'crashed'): no need to wait
    # for its heartbeat to time out.
    worker_reported_crash: bool = False
    # Heartbeat silence before this moment is not held against the worker: the database came back
    # then (it could take no heartbeat while it was down), so staleness is judged from its return.
    silence_counts_from: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """Where to go, why, and (if the breaker counts it) which spawn outcome this is."""

    to: WorkerState
    reason: str  # "<code>: <words and numbers>"
    # Set when this transition is a spawn outcome the breaker counts: BOOTED on promotion;
    # SPAWN_ERROR / SPAWN_TIMEOUT / HEARTBEAT_LOST on the way to error. Never on a scale-down.
    outcome: SpawnOutcomeKind | None = None
    # True when only the worker's heartbeat silence says it is lost (pod still running): the one
    # verdict an infrastructure fault (many workers silent at once) can explain instead.
    heartbeat_silence: bool = False

    @property
    def code(self) -> str:
        return reason_code(self.reason)


# The reason code of a drain that parks the pod in the warm pool once over (instead of terminating it).
PARK_REQUESTED = "park_requested"

# The reason code of a pod lost under a worker that held a task: counted against the task, never
# against the fleet's breaker (see the module docstring).
LOST_WITH_TASK = "lost_with_task"


class IllegalTransition(ValueError):
    """A move the transition table does not allow."""


_S = WorkerState

# Every allowed edge, with why it exists. Anything not listed is refused.
TRANSITIONS: Mapping[WorkerState, Mapping[WorkerState, str]] = MappingProxyType(
    {
        _S.SPAWNING: MappingProxyType(
            {
                _S.ACTIVE: "pod running and the worker sent its first real heartbeat: it may claim tasks",
                _S.ERROR: "provider refused the pod, the pod died while booting, or no heartbeat "
                "within spawn_timeout_s",
                _S.TERMINATING: "operator asked to terminate before boot: nothing to drain, stop the pod now",
            }
        ),
        _S.ACTIVE: MappingProxyType(
            {
                _S.DRAINING: "scale-down or operator terminate: stop claiming, finish held tasks first",
                _S.ERROR: "heartbeat silent past heartbeat_timeout_s, or the pod exited/vanished under it "
                "(holding a task: lost_with_task, counted against the task)",
                _S.TERMINATING: "operator terminate of an idle worker: no task to wait for",
            }
        ),
        _S.DRAINING: MappingProxyType(
            {
                _S.STOPPING: "drained (or drain_timeout_s reached) into the warm pool: stop the pod, keep it",
                _S.TERMINATING: "drained (no task in progress) or drain_timeout_s reached",
                _S.ERROR: "worker died mid-drain (pod gone or heartbeat lost): its tasks must be requeued",
            }
        ),
        _S.ERROR: MappingProxyType(
            {
                _S.TERMINATING: "a broken worker is stopped at once so it stops costing money",
            }
        ),
        _S.STOPPING: MappingProxyType(
            {
                _S.STOPPED: "the provider confirmed the pod stopped: no GPU billed any more, its disk is",
                _S.TERMINATING: "the pod vanished while stopping, the stop did not take within drain_timeout_s, or "
                "the operator asked to terminate",
            }
        ),
        _S.STOPPED: MappingProxyType(
            {
                _S.RESUMING: "demand came back: start the stopped pod again (faster than a new one)",
                _S.TERMINATING: "retired from the warm pool (over its size or kept too long), the operator asked, "
                "or the pod vanished",
            }
        ),
        _S.RESUMING: MappingProxyType(
            {
                _S.ACTIVE: "pod running again and the worker heartbeated after the resume",
                _S.ERROR: "the provider refused the resume (its host's GPUs were taken), the pod vanished, or no "
                "heartbeat within spawn_timeout_s of the resume; not a spawn outcome",
                _S.TERMINATING: "operator asked to terminate while resuming",
            }
        ),
        _S.TERMINATING: MappingProxyType(
            {
                _S.TERMINATED: "the provider confirmed the pod is gone; only then is billing over",
            }
        ),
        _S.TERMINATED: MappingProxyType({}),  # terminal: a worker id is never reused
    }
)


def reason_code(reason: str) -> str:
    """The stable code of a reason: the part before the first colon."""
    return reason.split(":", 1)[0].strip()


def check_transition(current: WorkerState, new: WorkerState) -> None:
    """Raise IllegalTransition unless `current -> new` is an edge of TRANSITIONS."""
    allowed = TRANSITIONS.get(current, {})
    if new not in allowed:
        options = ", ".join(sorted(s.value for s in allowed)) or "none: it is terminal"
        raise IllegalTransition(
            f"illegal transition {current.value} -> {new.value}: allowed from {current.value}: {options}"
        )


def _s(seconds: float) -> str:
    return f"{seconds:.0f}s"


def _gone(phase: PodPhase) -> bool:
    return phase in (PodPhase.GONE, PodPhase.EXITED)


def _silence_start(last_heard: float, obs: Observation) -> float:
    """From when silence counts: the last heartbeat, or the database's return if that is later."""
    if obs.silence_counts_from is None:
        return last_heard
    return max(last_heard, obs.silence_counts_from)


def _spawning(obs: Observation, now: float, created_at: float, config: ScalingSettings) -> Transition | None:
    age = now - created_at
    if obs.terminate_requested:
        return Transition(_S.TERMINATING, f"terminate_requested: operator asked while spawning ({_s(age)} old)")
    if obs.provider_error is not None:
        return Transition(
            _S.ERROR,
            f"spawn_error: provider failed to create the pod: {obs.provider_error}",
            SpawnOutcomeKind.SPAWN_ERROR,
        )
    if _gone(obs.pod_phase):
        return Transition(
            _S.ERROR,
            f"spawn_error: pod {obs.pod_phase.value} while booting, {_s(age)} after creation",
            SpawnOutcomeKind.SPAWN_ERROR,
        )
    if obs.worker_reported_crash:
        return Transition(
            _S.ERROR,
            f"spawn_error: the worker reported a crash while booting, {_s(age)} after creation",
            SpawnOutcomeKind.SPAWN_ERROR,
        )
    deadline = created_at + config.spawn_timeout_s
    if obs.silence_counts_from is not None:
        # A worker that booted while the database was down could not heartbeat: after its return it
        # gets a heartbeat timeout to do so, whatever the spawn timeout said meanwhile.
        deadline = max(deadline, obs.silence_counts_from + config.heartbeat_timeout_s)
    hb = obs.last_heartbeat_at
    # A heartbeat older than the worker itself is not real (a stale or defaulted column).
    real_heartbeat = hb is not None and hb >= created_at
    if obs.pod_phase is PodPhase.RUNNING and real_heartbeat and hb is not None and hb <= deadline:
        return Transition(
            _S.ACTIVE,
            f"promoted: pod running and first heartbeat {_s(hb - created_at)} after creation",
            SpawnOutcomeKind.BOOTED,
        )
    if now > deadline:
        return Transition(
            _S.ERROR,
            f"spawn_timeout: no heartbeat {_s(age)} after creation (limit {_s(config.spawn_timeout_s)}), "
            f"pod {obs.pod_phase.value}",
            SpawnOutcomeKind.SPAWN_TIMEOUT,
        )
    return None


def _active(obs: Observation, now: float, state_since: float, config: ScalingSettings) -> Transition | None:
    if _gone(obs.pod_phase) and obs.tasks_in_progress > 0:
        return Transition(
            _S.ERROR,
            f"{LOST_WITH_TASK}: pod {obs.pod_phase.value} while active with {obs.tasks_in_progress} task(s) in "
            "progress; counted against the task(s) (their attempts), not against the fleet's breaker",
        )
    if _gone(obs.pod_phase):
        return Transition(
            _S.ERROR,
            f"pod_lost: pod {obs.pod_phase.value} while active with {obs.tasks_in_progress} task(s) in progress",
            SpawnOutcomeKind.HEARTBEAT_LOST,
        )
    if obs.worker_reported_crash:
        return Transition(
            _S.ERROR,
            f"worker_crashed: the worker reported a crash with {obs.tasks_in_progress} task(s) in progress",
            SpawnOutcomeKind.HEARTBEAT_LOST,
        )
    last = obs.last_heartbeat_at if obs.last_heartbeat_at is not None else state_since
    silent = now - _silence_start(last, obs)
    if silent > config.heartbeat_timeout_s:
        return Transition(
            _S.ERROR,
            f"heartbeat_lost: no heartbeat for {_s(silent)} (limit {_s(config.heartbeat_timeout_s)})",
            SpawnOutcomeKind.HEARTBEAT_LOST,
            heartbeat_silence=True,
        )
    if obs.terminate_requested:
        if obs.tasks_in_progress > 0:
            return Transition(
                _S.DRAINING,
                f"terminate_requested: operator asked; {obs.tasks_in_progress} task(s) in progress, draining first",
            )
        return Transition(_S.TERMINATING, "terminate_requested: operator asked; worker idle")
    if obs.drain_requested and obs.park_requested:
        return Transition(
            _S.DRAINING, f"{PARK_REQUESTED}: scale-down into the warm pool; {obs.tasks_in_progress} task(s) in progress"
        )
    if obs.drain_requested:
        return Transition(_S.DRAINING, f"drain_requested: scale-down; {obs.tasks_in_progress} task(s) in progress")
    return None


def drain_parks(reason: str) -> bool:
    """Whether the drain recorded with `reason` parks its pod: a lifecycle restarted mid-drain reads it back
    from the worker's events (the request itself lived in the memory of the process that died)."""
    return reason_code(reason) == PARK_REQUESTED


def _draining(obs: Observation, now: float, state_since: float, config: ScalingSettings) -> Transition | None:
    if obs.park_requested and obs.pod_phase is PodPhase.EXITED and obs.tasks_in_progress == 0:
        # A worker that exits once drained (the native one does) leaves just the stopped pod a park wants.
        return Transition(_S.STOPPING, "parked: the drained worker exited; stopping its pod for the warm pool")
    if _gone(obs.pod_phase):
        return Transition(
            _S.ERROR, f"drain_lost: pod {obs.pod_phase.value} while draining {obs.tasks_in_progress} task(s)"
        )
    if (
        obs.last_heartbeat_at is not None
        and now - _silence_start(obs.last_heartbeat_at, obs) > config.heartbeat_timeout_s
    ):
        return Transition(
            _S.ERROR,
            f"drain_lost: no heartbeat for {_s(now - _silence_start(obs.last_heartbeat_at, obs))} while draining "
            f"(limit {_s(config.heartbeat_timeout_s)})",
            heartbeat_silence=True,
        )
    if obs.worker_reported_crash:
        return Transition(
            _S.ERROR, f"drain_lost: the worker reported a crash while draining {obs.tasks_in_progress} task(s)"
        )
    draining_for = now - state_since
    # An operator's terminate always ends in terminated; a scale-down may park the pod instead.
    then = _S.STOPPING if obs.park_requested and not obs.terminate_requested else _S.TERMINATING
    if obs.tasks_in_progress == 0:
        if then is _S.STOPPING:
            return Transition(then, f"parked: no task in progress after {_s(draining_for)} draining; stopping the pod")
        return Transition(then, f"drained: no task in progress after {_s(draining_for)} draining")
    if draining_for > config.drain_timeout_s:
        return Transition(
            then,
            f"drain_timeout: {obs.tasks_in_progress} task(s) still in progress after {_s(draining_for)} "
            f"(limit {_s(config.drain_timeout_s)}); they will be requeued",
        )
    return None


def _stopping(obs: Observation, now: float, state_since: float, config: ScalingSettings) -> Transition | None:
    if obs.terminate_requested:
        return Transition(_S.TERMINATING, "terminate_requested: operator asked while the pod was stopping")
    if obs.pod_phase is PodPhase.GONE:
        return Transition(_S.TERMINATING, "stop_lost: the pod vanished while stopping; confirming it gone")
    if obs.pod_phase is PodPhase.EXITED and obs.stop_accepted:
        return Transition(_S.STOPPED, f"stopped: the provider confirmed the pod stopped after {_s(now - state_since)}")
    if now - state_since > config.drain_timeout_s:
        # A stop that never takes leaves the GPU billed: give the pod up instead.
        return Transition(
            _S.TERMINATING,
            f"stop_timeout: the pod still not stopped after {_s(now - state_since)} "
            f"(limit drain_timeout_s {_s(config.drain_timeout_s)}); terminating it",
        )
    return None


def _stopped(obs: Observation, now: float, state_since: float) -> Transition | None:
    kept = now - state_since
    if obs.pod_phase is PodPhase.GONE:
        return Transition(_S.TERMINATING, f"stopped_lost: the stopped pod vanished after {_s(kept)}")
    if obs.terminate_requested:
        return Transition(_S.TERMINATING, f"terminate_requested: operator asked after {_s(kept)} stopped")
    if obs.retire_requested:
        return Transition(_S.TERMINATING, f"retired: terminating the stopped pod after {_s(kept)} in the warm pool")
    if obs.resume_requested:
        return Transition(_S.RESUMING, f"resume_requested: demand came back; resuming after {_s(kept)} stopped")
    return None


def _resuming(obs: Observation, now: float, state_since: float, config: ScalingSettings) -> Transition | None:
    waited = now - state_since
    if obs.terminate_requested:
        return Transition(_S.TERMINATING, f"terminate_requested: operator asked while resuming ({_s(waited)})")
    if obs.provider_error is not None:
        return Transition(_S.ERROR, f"resume_failed: the provider refused the resume: {obs.provider_error}")
    if obs.pod_phase is PodPhase.GONE:
        return Transition(_S.ERROR, f"resume_failed: the pod vanished {_s(waited)} into the resume")
    if obs.worker_reported_crash:
        return Transition(_S.ERROR, f"resume_failed: the worker reported a crash {_s(waited)} into the resume")
    deadline = state_since + config.spawn_timeout_s
    if obs.silence_counts_from is not None:
        deadline = max(deadline, obs.silence_counts_from + config.heartbeat_timeout_s)
    hb = obs.last_heartbeat_at
    # Only a heartbeat sent after the resume was asked says the worker is back (its row keeps the
    # last one before the stop).
    if obs.pod_phase is PodPhase.RUNNING and hb is not None and state_since <= hb <= deadline:
        return Transition(
            _S.ACTIVE, f"resumed: pod running and first heartbeat {_s(hb - state_since)} after the resume"
        )
    if now > deadline:
        return Transition(
            _S.ERROR,
            f"resume_failed: no heartbeat {_s(waited)} after the resume (limit {_s(config.spawn_timeout_s)}), "
            f"pod {obs.pod_phase.value}",
        )
    return None


def next_transition(
    current: WorkerState,
    obs: Observation,
    *,
    now: float,
    created_at: float,
    state_since: float,
    config: ScalingSettings,
) -> Transition | None:
    """The next state and the reason, or None to stay. Pure: `now` is an argument.

    `created_at` is when the worker row was written (the spawn timeout counts from it);
    `state_since` is when the worker entered `current` (the drain timeout counts from it).
    The result always satisfies `check_transition(current, result.to)`.
    """
    result: Transition | None
    if current is _S.SPAWNING:
        result = _spawning(obs, now, created_at, config)
    elif current is _S.ACTIVE:
        result = _active(obs, now, state_since, config)
    elif current is _S.DRAINING:
        result = _draining(obs, now, state_since, config)
    elif current is _S.STOPPING:
        result = _stopping(obs, now, state_since, config)
    elif current is _S.STOPPED:
        result = _stopped(obs, now, state_since)
    elif current is _S.RESUMING:
        result = _resuming(obs, now, state_since, config)
    elif current is _S.ERROR:
        result = Transition(
            _S.TERMINATING, f"error_cleanup: stopping the pod of a failed worker (pod {obs.pod_phase.value})"
        )
    elif current is _S.TERMINATING:
        result = (
            Transition(_S.TERMINATED, f"terminated: provider confirmed the pod is gone after {_s(now - state_since)}")
            if obs.pod_phase is PodPhase.GONE
            else None
        )
    else:
        result = None
    if result is not None:
        check_transition(current, result.to)
    return result
