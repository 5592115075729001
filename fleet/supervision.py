"""Pure rules the Scaler's sync and act phases follow, so the actor only dispatches.

- `reconcile`: which provider pods have no live worker row (orphans) and what to do with each,
  and which live rows point at a pod the provider no longer lists.
- `decision_record_key` / `should_record`: a cycle writes a `scaling_decisions` row when it changes
  something, or when what it wants changes (a breaker that holds back a spawn is recorded once, not
  every cycle).
- `new_worker_id`: the worker id format `gpu-YYYYMMDD_HHMMSS-<8 hex>`; the pod gets the same name.
- `lifecycle_action`: what a WorkerLifecycle must do to the outside world in a state, besides
  recording the transitions `fleet.lifecycle.next_transition` returns (create the pod while
  spawning without one, stop it while terminating).
- `lifecycles_to_ensure`: the live workers whose WorkerLifecycle the Scaler starts or re-attaches
  this cycle: all but those whose pod the Scaler is still creating itself (the lifecycle of such a
  worker is started when that create returns, so two `create` calls for one name never overlap).

No I/O, no clock reads: times are POSIX seconds passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from config.settings import OrphanPodPolicy
from fleet.lifecycle import PodPhase
from fleet.models import Decision, WorkerState

__all__ = [
    "LifecycleAction",
    "OrphanAction",
    "ReconcilePlan",
    "decision_record_key",
    "lifecycle_action",
    "lifecycles_to_ensure",
    "new_worker_id",
    "reconcile",
    "should_record",
]


@dataclass(frozen=True, slots=True)
class OrphanAction:
    pod_id: str
    pod_name: str
    adopt: bool  # True: write a worker row named after the pod and supervise it; False: terminate it
    reason: str


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    orphans: tuple[OrphanAction, ...] = ()
    # Live rows whose recorded pod the provider does not list. Listing is eventually consistent,
    # so this is a hint for the log; the worker's lifecycle confirms with `get` and acts.
    pods_missing: tuple[str, ...] = ()


def reconcile(
    pods: Iterable[tuple[str, str]],
    live_rows: Iterable[tuple[str, str | None]],
    known_worker_ids: Iterable[str],
    policy: OrphanPodPolicy,
) -> ReconcilePlan:
    """Compare provider pods `(pod_id, name)` with live worker rows `(worker_id, pod_id)`.

    Read the pods before the rows: a row is always written before its pod is created, so a pod seen
    first always has its row visible afterwards, and a pod being created right now is never taken
    for an orphan. A pod whose name belongs to a worker that already ended (`known_worker_ids` minus
    the live ones) is terminated whatever the policy: that worker is over, its id is never reused.
    """
    live = dict(live_rows)
    known = set(known_worker_ids)
    pod_list = list(pods)
    orphans: list[OrphanAction] = []
    for pod_id, name in pod_list:
        if name in live:
            continue
        ended = name in known
        adopt = policy is OrphanPodPolicy.ADOPT and not ended
        if ended:
            reason = f"orphan_pod: pod {pod_id} named {name} belongs to a worker that already ended"
        elif adopt:
            reason = f"orphan_pod: pod {pod_id} named {name} has no worker row; adopted (orphan_pod_policy=adopt)"
        else:
            reason = (
                f"orphan_pod: pod {pod_id} named {name} has no worker row; terminated (orphan_pod_policy=terminate)"
            )
        orphans.append(OrphanAction(pod_id=pod_id, pod_name=name, adopt=adopt, reason=reason))
    listed = {pod_id for pod_id, _ in pod_list}
    missing = tuple(worker_id for worker_id, pod_id in live.items() if pod_id is not None and pod_id not in listed)
    return ReconcilePlan(orphans=tuple(orphans), pods_missing=missing)


def decision_record_key(decision: Decision) -> tuple[object, ...]:
    """What makes two decisions the same for the record: outputs, wish, reason codes, breaker."""
    codes = tuple(reason.split(":", 1)[0] for reason in decision.reasons)
    return (decision.spawn, decision.drain, decision.desired, decision.capacity, codes, decision.breaker.status)


def should_record(decision: Decision, last_key: tuple[object, ...] | None) -> bool:
    """Record a decision that changes something, or whose wish differs from the last one recorded.

    A wish is `desired != capacity` (for instance a spawn held back by the breaker or max_workers);
    repeating the same wish every cycle adds nothing to the record.
    """
    if decision.changes_something:
        return True
    wants_change = decision.desired != decision.capacity
    return wants_change and decision_record_key(decision) != last_key


def new_worker_id(prefix: str, now: float, token_hex8: str) -> str:
    """`<prefix>YYYYMMDD_HHMMSS-<8 hex>` in UTC; `token_hex8` is 8 random hex digits from the caller."""
    stamp = datetime.fromtimestamp(now, tz=UTC).strftime("%Y%m%d_%H%M%S")
    return f"{prefix}{stamp}-{token_hex8}"


class LifecycleAction(StrEnum):
    OBSERVE = "observe"  # nothing to do to the pod: observe it and follow next_transition
    PROVISION = "provision"  # spawning and no pod recorded: create it (idempotent by name) and record its id
    TERMINATE_POD = "terminate_pod"  # terminating: ask the provider to stop the pod until it confirms GONE


def lifecycle_action(state: WorkerState, pod_phase: PodPhase, provider_error: str | None) -> LifecycleAction:
    """The side effect a lifecycle performs before observing again.

    A spawning worker whose pod id is not recorded (phase NONE) gets `create` called, also after a
    crash between the row and the pod: `create` is idempotent by name, so the pod is found, never
    made twice. A provider error ends provisioning: the state machine turns it into `error`.
    """
    if state is WorkerState.SPAWNING and pod_phase is PodPhase.NONE and provider_error is None:
        return LifecycleAction.PROVISION
    if state is WorkerState.TERMINATING and pod_phase is not PodPhase.GONE:
        return LifecycleAction.TERMINATE_POD
    return LifecycleAction.OBSERVE


def lifecycles_to_ensure(live_ids: Iterable[str], provisioning: Iterable[str]) -> list[str]:
    """Live workers that must have a WorkerLifecycle now, in a stable order: every live one except
    those whose pod create is still in flight in the Scaler (their lifecycle starts after it)."""
    return sorted(set(live_ids) - set(provisioning))
