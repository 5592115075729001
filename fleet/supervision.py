"""Pure rules the Scaler's sync and act phases and the WorkerLifecycle follow, so the actors only dispatch.

- `reconcile`: which provider pods have no live worker row (orphans) and what to do with each, which
  pods carry a live worker's name but are not its recorded pod (duplicates), and which live rows
  point at a pod the provider no longer lists.
- `decision_record_key` / `should_record`: a cycle writes a `scaling_decisions` row when it changes
  something, or when what it wants changes (a breaker that holds back a spawn is recorded once, not
  every cycle).
- `new_worker_id`: the worker id format `gpu-YYYYMMDD_HHMMSS-<8 hex>`; the pod gets the same name.
- `lifecycle_action`: what a WorkerLifecycle must do to the outside world in a state, besides
  recording the transitions `fleet.lifecycle.next_transition` returns (create the pod while
  spawning without one, stop it while terminating, unless a failed stop is waiting out its backoff).
- `lifecycles_to_ensure`: the live workers whose WorkerLifecycle the Scaler starts or re-attaches
  this cycle: all but those whose pod the Scaler is still creating itself (the lifecycle of such a
  worker is started when that create returns, so two `create` calls for one name never overlap).
- `Retry`, `retry_due`, `after_failure`: a pod terminate that failed is a recorded state (attempts,
  last error, when to try again) retried with exponential backoff, never in a tight loop and never
  blocking anything else (Ray autoscaler v2's TERMINATION_FAILED).
- `LoopFacts` / `loop_health`: what `health()` of the Scaler and of a WorkerLifecycle returns: facts
  (last completed cycle or step, its age, consecutive failures per phase, the last error) and a
  verdict in words, `ok`, `failing`, `stuck` or `stopped`, never a bare True.
- `Outage`, `after_outage_failure`, `outage_wait_s`, `outage_record`: the database out of reach is
  an incident every loop rides out with capped, jittered backoff, and records once it is back.
- `fleet_silence`, `silence_held`, `hold_after`: when more than a share of the workers look lost at
  once, that is an infrastructure fault: nobody is terminated for it, and it is re-checked later.

No I/O, no clock reads: times are POSIX seconds passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from config.settings import OrphanPodPolicy
from fleet.lifecycle import PodPhase
from fleet.models import Decision, DecisionKind, WorkerState, WorkerView

__all__ = [
    "DuplicatePod",
    "FleetSilence",
    "LifecycleAction",
    "LoopFacts",
    "LoopVerdict",
    "OrphanAction",
    "Outage",
    "OutageRecord",
    "ReconcilePlan",
    "Retry",
    "after_failure",
    "after_outage_failure",
    "decision_record_key",
    "fault_episode",
    "fleet_silence",
    "hold_after",
    "lifecycle_action",
    "lifecycles_to_ensure",
    "loop_health",
    "new_worker_id",
    "outage_backoff_s",
    "outage_over_limit",
    "outage_record",
    "outage_wait_s",
    "reconcile",
    "retry_due",
    "should_record",
    "silence_held",
    "stop_failed_reason",
    "stuck_after_s",
    "terminate_failed_reason",
]


@dataclass(frozen=True, slots=True)
class OrphanAction:
    pod_id: str
    pod_name: str
    adopt: bool  # True: write a worker row named after the pod and supervise it; False: terminate it
    reason: str
    # True: the name is a worker that already ended (its row is `terminated`, never left), so the
    # Scaler terminates the pod itself and notes it on that row. False (and not adopted): the pod is
    # recorded as a `terminating` worker row and its WorkerLifecycle stops it, retried and recorded.
    ended: bool = False


@dataclass(frozen=True, slots=True)
class DuplicatePod:
    """A pod named after a live worker whose recorded pod is another one: an extra, to terminate."""

    pod_id: str
    worker_id: str
    recorded_pod_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    orphans: tuple[OrphanAction, ...] = ()
    duplicates: tuple[DuplicatePod, ...] = ()
    # Live rows whose recorded pod the provider does not list. Listing is eventually consistent,
    # so this is a hint for the log; the worker's lifecycle confirms with `get` and acts.
    pods_missing: tuple[str, ...] = ()


def reconcile(
    pods: Iterable[tuple[str, str]],
    live_rows: Iterable[tuple[str, str | None]],
    known_worker_ids: Iterable[str],
    policy: OrphanPodPolicy,
    *,
    ended_at: Mapping[str, float] | None = None,
    listed_at: float | None = None,
) -> ReconcilePlan:
    """Compare provider pods `(pod_id, name)` with live worker rows `(worker_id, pod_id)`.

    Read the pods before the rows: a row is always written before its pod is created, so a pod seen
    first always has its row visible afterwards, and a pod being created right now is never taken
    for an orphan. A pod whose name belongs to a worker that already ended (`known_worker_ids` minus
    the live ones) is terminated whatever the policy: that worker is over, its id is never reused.
    Unless it ended (`ended_at`, database clock) at or after the pods were listed (`listed_at`): its
    lifecycle confirmed the pod gone after the list was taken, so the list says nothing about it.

    Create is idempotent by name only as far as the provider's list is consistent, so one name can
    end up with two pods. A pod named after a live worker whose recorded pod id is another one is a
    duplicate: nothing supervises it, so it is terminated. A row with no pod id yet (its create is in
    flight) has no duplicate: the pod listed may be the one being recorded.
    """
    live = dict(live_rows)
    known = set(known_worker_ids)
    pod_list = list(pods)
    orphans: list[OrphanAction] = []
    duplicates: list[DuplicatePod] = []
    for pod_id, name in pod_list:
        if name in live:
            recorded = live[name]
            if recorded is not None and recorded != pod_id:
                duplicates.append(
                    DuplicatePod(
                        pod_id=pod_id,
                        worker_id=name,
                        recorded_pod_id=recorded,
                        reason=(
                            f"duplicate_pod: pod {pod_id} is also named {name}, whose recorded pod is "
                            f"{recorded}; the extra one is terminated"
                        ),
                    )
                )
            continue
        ended = name in known
        end = (ended_at or {}).get(name)
        if ended and listed_at is not None and end is not None and end >= listed_at:
            continue  # ended after the pods were listed: a stale sighting, not a pod left running
        adopt = policy is OrphanPodPolicy.ADOPT and not ended
        if ended:
            reason = f"orphan_pod: pod {pod_id} named {name} belongs to a worker that already ended"
        elif adopt:
            reason = f"orphan_pod: pod {pod_id} named {name} has no worker row; adopted (orphan_pod_policy=adopt)"
        else:
            reason = (
                f"orphan_pod: pod {pod_id} named {name} has no worker row; terminated (orphan_pod_policy=terminate)"
            )
        orphans.append(OrphanAction(pod_id=pod_id, pod_name=name, adopt=adopt, reason=reason, ended=ended))
    listed = {pod_id for pod_id, _ in pod_list}
    missing = tuple(worker_id for worker_id, pod_id in live.items() if pod_id is not None and pod_id not in listed)
    return ReconcilePlan(orphans=tuple(orphans), duplicates=tuple(duplicates), pods_missing=missing)


def decision_record_key(decision: Decision) -> tuple[object, ...]:
    """What makes two decisions the same for the record: outputs, wish, kind, reason codes, breaker."""
    codes = tuple(reason.split(":", 1)[0] for reason in decision.reasons)
    return (
        decision.spawn,
        decision.drain,
        decision.desired,
        decision.capacity,
        decision.kind,
        codes,
        decision.breaker.status,
    )


def should_record(decision: Decision, last_key: tuple[object, ...] | None) -> bool:
    """Record a decision that changes something, or whose wish differs from the last one recorded.

    A wish is `desired != capacity` (for instance a spawn held back by the breaker or max_workers), or
    any kind but steady (demand above max_workers with the fleet at it is `capped`, with desired ==
    capacity); repeating the same wish every cycle adds nothing to the record.
    """
    if decision.changes_something:
        return True
    wants_change = decision.desired != decision.capacity or decision.kind is not DecisionKind.STEADY
    return wants_change and decision_record_key(decision) != last_key


def new_worker_id(prefix: str, now: float, token_hex8: str) -> str:
    """`<prefix>YYYYMMDD_HHMMSS-<8 hex>` in UTC; `token_hex8` is 8 random hex digits from the caller."""
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d_%H%M%S")
    return f"{prefix}{stamp}-{token_hex8}"


# A stopped pod (warm pool) needs watching only for vanishing: stepped this often at most, woken at
# once by a request.
STOPPED_POLL_S = 30.0


def step_pause_s(state: WorkerState | None, poll_s: float) -> float:
    """The pause between a lifecycle's steps in `state`: a stopped pod is watched slowly."""
    return max(poll_s, STOPPED_POLL_S) if state is WorkerState.STOPPED else poll_s


class LifecycleAction(StrEnum):
    OBSERVE = "observe"  # nothing to do to the pod: observe it and follow next_transition
    PROVISION = "provision"  # spawning and no pod recorded: create it (idempotent by name) and record its id
    TERMINATE_POD = "terminate_pod"  # terminating: ask the provider to stop the pod until it confirms GONE
    STOP_POD = "stop_pod"  # stopping (warm pool): ask the provider to stop the pod, keeping its disk
    RESUME_POD = "resume_pod"  # resuming: ask the provider to start the stopped pod again


def lifecycle_action(
    state: WorkerState,
    pod_phase: PodPhase,
    provider_error: str | None,
    *,
    terminate_due: bool = True,
    stop_due: bool = True,
    resume_due: bool = True,
) -> LifecycleAction:
    """The side effect a lifecycle performs before observing again.

    A spawning worker whose pod id is not recorded (phase NONE) gets `create` called, also after a
    crash between the row and the pod: `create` is idempotent by name, so the pod is found, never
    made twice. A provider error ends provisioning: the state machine turns it into `error`. A
    terminate that failed is not asked again before its backoff is over (`terminate_due` False):
    the pod is only observed, so a provider that refuses stops nothing else.

    The warm pool: a stopping worker's pod is stopped (also when it shows EXITED already: a pod
    whose process ended is not necessarily stopped at the provider, and a stop is idempotent) until
    the stop was accepted or while a refused one waits out its backoff (`stop_due` False). A resuming
    worker's stopped pod is resumed once (`resume_due` False after that: the pod may show EXITED a
    moment longer), and never after the provider refused it (the state machine ends the resume).
    """
    if state is WorkerState.SPAWNING and pod_phase is PodPhase.NONE and provider_error is None:
        return LifecycleAction.PROVISION
    if state is WorkerState.TERMINATING and pod_phase is not PodPhase.GONE and terminate_due:
        return LifecycleAction.TERMINATE_POD
    if state is WorkerState.STOPPING and pod_phase is not PodPhase.GONE and stop_due:
        return LifecycleAction.STOP_POD
    if state is WorkerState.RESUMING and pod_phase is PodPhase.EXITED and provider_error is None and resume_due:
        return LifecycleAction.RESUME_POD
    return LifecycleAction.OBSERVE


def lifecycles_to_ensure(live_ids: Iterable[str], provisioning: Iterable[str]) -> list[str]:
    """Live workers that must have a WorkerLifecycle now, in a stable order: every live one except
    those whose pod create is still in flight in the Scaler (their lifecycle starts after it)."""
    return sorted(set(live_ids) - set(provisioning))


# --- retries of pod terminates -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Retry:
    """A side effect that failed: how often in a row, the last error, and not before when again."""

    attempts: int  # failed attempts in a row
    last_error: str
    failed_at: float
    next_at: float

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "last_error": self.last_error,
            "failed_at": self.failed_at,
            "next_in_s": round(max(0.0, self.next_at - now), 1),
        }


def retry_due(retry: Retry | None, now: float) -> bool:
    """Whether to try (again) now: never failed, or its backoff is over."""
    return retry is None or now >= retry.next_at


def after_failure(retry: Retry | None, now: float, error: str, *, base_s: float, cap_s: float) -> Retry:
    """The state after one more failure: backoff doubles from `base_s` per failure in a row, up to `cap_s`."""
    attempts = (retry.attempts if retry is not None else 0) + 1
    delay = min(cap_s, base_s * (2 ** min(attempts - 1, 30)))
    return Retry(attempts=attempts, last_error=error, failed_at=now, next_at=now + delay)


def terminate_failed_reason(pod_id: str, retry: Retry, now: float) -> str:
    """The worker_events reason that records a failed terminate (code `terminate_failed`)."""
    return _failed_reason("terminate_failed", f"the provider did not stop pod {pod_id}", retry, now)


def stop_failed_reason(pod_id: str, retry: Retry, now: float) -> str:
    """The worker_events reason that records a failed stop into the warm pool (code `stop_failed`):
    the pod runs (and bills its GPU) until a stop is accepted."""
    return _failed_reason("stop_failed", f"the provider did not stop pod {pod_id} for the warm pool", retry, now)


def _failed_reason(code: str, what: str, retry: Retry, now: float) -> str:
    return (
        f"{code}: {what} ({retry.last_error}); "
        f"attempt {retry.attempts}, next try in {max(0.0, retry.next_at - now):.0f}s"
    )


# --- health of a control loop ----------------------------------------------------------------------


class LoopVerdict(StrEnum):
    OK = "ok"  # the last cycle/step completed recently and no phase is failing
    FAILING = "failing"  # the loop runs, but a phase failed in its last attempts
    STUCK = "stuck"  # nothing completed for longer than `stuck_after_s`: the loop hangs somewhere
    STOPPED = "stopped"  # the loop thread is not running


@dataclass(frozen=True, slots=True)
class LoopFacts:
    """What a control loop knows about itself; `loop_health` turns it into the health answer."""

    unit: str  # "cycle" or "step"
    started_at: float  # when this loop (this process) started
    completed: int  # cycles/steps completed so far
    last_completed_at: float | None
    loop_alive: bool
    current_phase: str | None = None  # the phase running now, if any
    current_phase_since: float | None = None
    consecutive_failures: Mapping[str, int] = field(default_factory=dict)  # phase -> failures in a row
    last_error: str | None = None  # "<phase>: <error>"
    last_error_at: float | None = None


def stuck_after_s(interval_s: float) -> float:
    """How long without a completed cycle/step counts as stuck: three intervals, at least 30 s
    (a provider call may retry for a while; that is slow, not stuck)."""
    return max(3 * interval_s, 30.0)


def loop_health(facts: LoopFacts, now: float, *, interval_s: float, stuck_after: float | None = None) -> dict[str, Any]:
    """Facts plus a verdict and one plain sentence saying why (JSON-ready). `stuck_after` overrides
    `stuck_after_s(interval_s)`."""
    since = facts.last_completed_at if facts.last_completed_at is not None else facts.started_at
    age = max(0.0, now - since)
    failing = {phase: n for phase, n in facts.consecutive_failures.items() if n > 0}
    in_phase = ""
    if facts.current_phase is not None and facts.current_phase_since is not None:
        in_phase = f"; in phase {facts.current_phase} for {now - facts.current_phase_since:.0f}s"
    unit = facts.unit
    if not facts.loop_alive:
        verdict = LoopVerdict.STOPPED
        summary = f"the {unit} loop is not running"
    elif age > (stuck_after if stuck_after is not None else stuck_after_s(interval_s)):
        verdict = LoopVerdict.STUCK
        done = (
            f"no {unit} completed for {age:.0f}s"
            if facts.completed
            else f"no {unit} completed since start {age:.0f}s ago"
        )
        summary = f"{done}{in_phase}"
    elif failing:
        verdict = LoopVerdict.FAILING
        parts = [f"{phase} failed {n} {unit}(s) in a row" for phase, n in sorted(failing.items())]
        summary = ", ".join(parts)
    else:
        verdict = LoopVerdict.OK
        summary = f"{unit} {facts.completed} completed {age:.1f}s ago" if facts.completed else f"starting{in_phase}"
    if facts.last_error and verdict is not LoopVerdict.OK:
        summary += f"; last error: {facts.last_error}"
    return {
        "ok": verdict is LoopVerdict.OK,
        "verdict": verdict.value,
        "summary": summary,
        f"last_{unit}": facts.completed,
        f"last_{unit}_at": facts.last_completed_at,
        f"seconds_since_{unit}": round(age, 3),
        "current_phase": facts.current_phase,
        "consecutive_failures": dict(sorted(failing.items())),
        "last_error": facts.last_error,
        "last_error_at": facts.last_error_at,
        "loop_alive": facts.loop_alive,
    }


# --- the database out of reach ---------------------------------------------------------------------
#
# A database outage is an incident to ride out: nobody exits for it and nothing is decided from facts
# read before it. Each loop that needs the database (the Scaler's cycle, a lifecycle's step, the
# demo's view, a worker's report) keeps an `Outage` while its calls fail and waits `outage_wait_s`
# between tries: exponential backoff capped at `cap_s`, with jitter so that a fleet that lost the
# database together does not hammer it together when it returns.


@dataclass(frozen=True, slots=True)
class Outage:
    """The database has been out of reach since `since` (POSIX seconds, the caller's clock), for
    `attempts` failed tries in a row; the next try is not before `next_at`."""

    since: float
    attempts: int
    last_error: str
    next_at: float

    def seconds(self, now: float) -> float:
        return max(0.0, now - self.since)

    def summary(self) -> str:
        """`database unreachable since 17:35:31 (7 attempts)`: what the live view and `status` say."""
        return f"database unreachable since {_clock(self.since)} ({_attempts(self.attempts)})"

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "reachable": False,
            "since": self.since,
            "seconds": round(self.seconds(now), 1),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_in_s": round(max(0.0, self.next_at - now), 1),
            "summary": self.summary(),
        }


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%H:%M:%S")


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


def outage_backoff_s(attempts: int, *, base_s: float, cap_s: float, jitter: float) -> float:
    """The wait after `attempts` failed tries in a row: `base_s * 2^(attempts-1)`, at most `cap_s`,
    then scaled into [half, all] of it by `jitter` in [0, 1] ("equal jitter": spread, never zero)."""
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be within [0, 1], got {jitter}")
    ceiling: float = min(cap_s, base_s * 2.0 ** min(max(attempts, 1) - 1, 30))
    return ceiling / 2 + jitter * ceiling / 2


def after_outage_failure(
    outage: Outage | None, now: float, error: str, *, base_s: float, cap_s: float, jitter: float
) -> Outage:
    """The outage after one more failed try at `now` (a new one if none was running)."""
    attempts = (outage.attempts if outage is not None else 0) + 1
    since = outage.since if outage is not None else now
    wait = outage_backoff_s(attempts, base_s=base_s, cap_s=cap_s, jitter=jitter)
    return Outage(since=since, attempts=attempts, last_error=error, next_at=now + wait)


def outage_wait_s(outage: Outage | None, now: float, *, default_s: float) -> float:
    """How long a loop waits before its next try: the outage's backoff, or its usual interval."""
    if outage is None:
        return default_s
    return max(0.0, outage.next_at - now)


def outage_over_limit(outage: Outage | None, now: float, limit_s: float) -> bool:
    """Whether an outage has lasted longer than `limit_s` (only the demo gives up on that)."""
    return outage is not None and outage.seconds(now) > limit_s


@dataclass(frozen=True, slots=True)
class OutageRecord:
    """One outage as it is recorded once the database is back: an orchestrator event."""

    started_at: float
    ended_at: float
    attempts: int
    last_error: str
    waited: tuple[str, ...]  # what could not go on meanwhile, in words

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    def reason(self) -> str:
        """`database_outage: unreachable from 17:35:31 to 17:36:02 (31 s, 12 attempts, last error ...); waited: ...`"""
        text = (
            f"database_outage: unreachable from {_clock(self.started_at)} to {_clock(self.ended_at)} "
            f"({self.seconds:.0f} s, {_attempts(self.attempts)}; last error: {self.last_error})"
        )
        if self.waited:
            text += "; waited: " + "; ".join(self.waited)
        return text

    def details(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "seconds": round(self.seconds, 1),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "waited": list(self.waited),
        }


def outage_record(outage: Outage, ended_at: float, waited: Iterable[str]) -> OutageRecord:
    """The record of an outage that ended at `ended_at` (the first successful read after it)."""
    return OutageRecord(
        started_at=outage.since,
        ended_at=max(ended_at, outage.since),
        attempts=outage.attempts,
        last_error=outage.last_error,
        waited=tuple(waited),
    )


# --- many workers silent at once: an infrastructure fault, not theirs -------------------------------


@dataclass(frozen=True, slots=True)
class FleetSilence:
    """Which workers that should heartbeat look lost now, and whether that is an infrastructure fault."""

    silent: tuple[str, ...]
    expected: int  # workers expected to heartbeat (active or draining)
    infrastructure_fault: bool
    reason: str


_HEARTBEATING = frozenset({WorkerState.ACTIVE, WorkerState.DRAINING})


def fleet_silence(
    workers: Iterable[WorkerView],
    now: float,
    *,
    timeout_s: float,
    counts_from: float | None,
    share: float,
    min_workers: int,
) -> FleetSilence:
    """Workers whose heartbeat is older than `timeout_s` (silence counted from `counts_from` at the
    earliest: when the database came back, it could take no heartbeat before), and whether more than
    `share` of those expected to heartbeat, and at least `min_workers`, look lost at the same moment.

    That is an infrastructure fault (the database, the network, the host of many pods), not the
    workers': the Kubernetes node-lifecycle controller stops evictions in a zone disruption for the
    same reason. Nobody is terminated for it; the caller re-checks after a grace period.
    """
    expected = [w for w in workers if w.state in _HEARTBEATING]
    silent: list[str] = []
    for w in expected:
        last = w.last_heartbeat_at if w.last_heartbeat_at is not None else (w.promoted_at or w.created_at)
        if counts_from is not None:
            last = max(last, counts_from)
        if now - last > timeout_s:
            silent.append(w.id)
    fault = len(silent) >= min_workers and len(silent) > share * len(expected)
    if fault:
        reason = (
            f"infrastructure_fault: {len(silent)} of {len(expected)} workers silent past {timeout_s:.0f}s at once "
            f"(more than {share:.0%}, at least {min_workers}): the database, network or hosts, not the workers; "
            "nobody is terminated for it"
        )
    elif silent:
        reason = f"{len(silent)} of {len(expected)} workers silent past {timeout_s:.0f}s: each one's own failure"
    else:
        reason = f"none of {len(expected)} workers silent past {timeout_s:.0f}s"
    return FleetSilence(silent=tuple(sorted(silent)), expected=len(expected), infrastructure_fault=fault, reason=reason)


def silence_held(hold_until: float | None, now: float) -> bool:
    """Whether a heartbeat loss waits: an infrastructure fault was found and its grace is not over."""
    return hold_until is not None and now < hold_until


def hold_after(fleet: FleetSilence, now: float, grace_s: float) -> tuple[float | None, str | None]:
    """After judging the fleet: (hold until, note for the worker's record), or (None, None) when the
    silence is the worker's own and may be acted on."""
    if not fleet.infrastructure_fault:
        return None, None
    until = now + grace_s
    return until, f"{fleet.reason}; this worker is held and re-checked at {_clock(until)}"


def fault_episode(fleet: FleetSilence, recorded: bool) -> tuple[bool, bool]:
    """(record it now, recorded from now on): an infrastructure fault is recorded once when it begins,
    not every cycle it lasts; one that ended may be recorded again when the next one begins."""
    if not fleet.infrastructure_fault:
        return False, False
    return not recorded, True
