"""The policies the simulator runs: ours and the two it is compared against, all `decide(ctx)`.

Every policy takes the same `fleet.policy.PolicyContext` as `fleet.policy.decide`, so a baseline
cannot drift from what the Scaler passes.

- `SeedPolicy` reproduces the replaced orchestrator (see `shared/seed/`): 30 s poll, min 2 and
  max 10 workers, desired = queued + in-progress tasks, capacity = *active* workers only (no spawn
  lease, so a booting pod is spawned again every poll), idle timeout 300 s, over-capacity idle
  timeout 30 s after a 60 s grace from promotion, and a failure-rate brake that counts every
  ended worker, normal scale-downs included, over a 30 minute window.
- `KedaPolicy` is a KEDA ScaledObject on a Postgres count query (`Queued` + `In Progress`, target
  1 per replica) under HPA defaults: 30 s polling, immediate scale-up (at most max(4 pods, 100%)
  per step), 300 s scale-down stabilization (the highest recommendation of the last 300 s wins),
  minReplicaCount 0, and a ReplicaSet that removes not-ready pods first, then the newest.
- `DefaultPolicy` wraps `fleet.policy.decide`, on `config.cycle_interval_s` and woken by each new
  task (no sooner than `config.wake_debounce_s` after the last woken cycle), as the Scaler is.
- `PreviousPolicy` is the same `decide` with nothing learned (`FleetHistory.learned` emptied every
  cycle): the default before `fleet.learning`, a fixed idle timeout and no capacity on its way. It
  is the anchor every comparison measures the gap from (`sim.compare.ANCHOR`).

The seed policy is not a pure function of the fleet (it remembers which workers it has seen end),
so policies are objects; each holds only its own bookkeeping and never reads a clock.
The constants below are the seed's, as read from its code and the forensic report; where the
report is silent (the brake's threshold and minimum attempts) we use our own defaults (0.5, 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from config.settings import ScalingSettings
from fleet import policy as default_policy
from fleet.models import Decision, DemandMemory, FleetHistory, WorkerState, WorkerView
from fleet.policy import PolicyContext

__all__ = [
    "POLICY_NAMES",
    "DefaultPolicy",
    "KedaPolicy",
    "Policy",
    "PreviousPolicy",
    "RunsAsTheScaler",
    "SeedPolicy",
    "make_policy",
]

POLICY_NAMES = ("default", "previous", "seed", "keda")


class Policy(Protocol):
    """A scaling policy as the simulator drives it: how often it runs, and one decision per run."""

    name: str

    def cycle_interval_s(self, config: ScalingSettings) -> float: ...

    def wake_debounce_s(self, config: ScalingSettings) -> float | None:
        """Least seconds between cycles woken by a new task; None: it runs on its timer alone."""
        ...

    def decide(self, ctx: PolicyContext) -> Decision: ...


class RunsAsTheScaler:
    """A policy the Scaler runs: on `config.cycle_interval_s` and woken by each new task, no sooner
    than `config.wake_debounce_s` after the last woken cycle."""

    def cycle_interval_s(self, config: ScalingSettings) -> float:
        return config.cycle_interval_s

    def wake_debounce_s(self, config: ScalingSettings) -> float | None:
        return config.wake_debounce_s


@dataclass
class DefaultPolicy(RunsAsTheScaler):
    """This project's policy (`fleet.policy.decide`), as the Scaler runs it."""

    name: str = "default"

    def decide(self, ctx: PolicyContext) -> Decision:
        return default_policy.decide(ctx)


@dataclass
class PreviousPolicy(RunsAsTheScaler):
    """`fleet.policy.decide` with nothing learned and no warm pool: the default policy before
    `fleet.learning` and the warm pool (the anchor every gap is measured from)."""

    name: str = "previous"

    def decide(self, ctx: PolicyContext) -> Decision:
        config = ctx.config if ctx.config.warm_pool_size == 0 else ctx.config.model_copy(update={"warm_pool_size": 0})
        forgetful = replace(ctx, config=config, history=replace(ctx.history, learned=DemandMemory()))
        decision = default_policy.decide(forgetful)
        return replace(decision, history=replace(decision.history, learned=DemandMemory()))


def _decision(
    spawn: int, drain: list[str], reasons: list[str], desired: int, capacity: int, history: FleetHistory, now: float
) -> Decision:
    new_history = replace(
        history,
        last_scale_up_at=now if spawn else history.last_scale_up_at,
        last_scale_down_at=now if drain else history.last_scale_down_at,
    )
    return Decision(
        spawn=spawn,
        drain=tuple(drain),
        reasons=tuple(reasons),
        breaker=history.breaker,
        desired=desired,
        capacity=capacity,
        inputs={"desired": desired, "capacity": capacity},
        history=new_history,
    )


@dataclass
class SeedPolicy:
    """The replaced orchestrator's rules (see the module docstring)."""

    name: str = "seed"
    poll_s: float = 30.0
    min_workers: int = 2
    max_workers: int = 10
    idle_timeout_s: float = 300.0
    over_capacity_idle_s: float = 30.0
    scale_down_grace_s: float = 60.0  # no termination this soon after promotion
    failure_window_s: float = 1800.0
    failure_rate_threshold: float = 0.5
    min_attempts: int = 4
    # Bookkeeping: worker id -> created_at of every worker seen; worker id -> when it was seen ended.
    _created: dict[str, float] = field(default_factory=dict)
    _ended: dict[str, float] = field(default_factory=dict)

    def cycle_interval_s(self, config: ScalingSettings) -> float:
        return self.poll_s

    def wake_debounce_s(self, config: ScalingSettings) -> float | None:
        return None

    def _observe(self, workers: Sequence[WorkerView], now: float) -> tuple[int, int]:
        present = set()
        for w in workers:
            self._created.setdefault(w.id, w.created_at)
            if w.state in (WorkerState.TERMINATED, WorkerState.ERROR, WorkerState.TERMINATING):
                self._ended.setdefault(w.id, now)
            else:
                present.add(w.id)
        for wid in self._created:
            if wid not in present:
                self._ended.setdefault(wid, now)  # gone from the list: it ended
        start = now - self.failure_window_s
        created = sum(1 for t in self._created.values() if t >= start)
        ended = sum(1 for t in self._ended.values() if t >= start)
        return created, ended

    def decide(self, ctx: PolicyContext) -> Decision:
        snapshot, workers, history, now = ctx.snapshot, ctx.workers, ctx.history, ctx.now
        created, ended = self._observe(workers, now)
        live = [w for w in workers if w.state in (WorkerState.SPAWNING, WorkerState.ACTIVE, WorkerState.DRAINING)]
        active = [w for w in live if w.state is WorkerState.ACTIVE]
        desired = min(max(math.ceil(snapshot.queued + snapshot.in_progress), self.min_workers), self.max_workers)
        reasons: list[str] = []
        spawn = 0
        # The seed's mistake 1: only active workers count, so a booting pod is spawned again.
        want = desired - len(active)
        if want > 0:
            rate = min(1.0, ended / created) if created else 0.0
            # The seed's mistake 3: every ended worker, normal scale-downs included, is a "failure".
            if created >= self.min_attempts and rate >= self.failure_rate_threshold:
                reasons.append(f"seed: failure rate {rate:.2f} ({ended}/{created}) too high, no spawn")
            else:
                spawn = max(0, min(want, self.max_workers - len(live)))
                reasons.append(f"seed: desired {desired}, active {len(active)}, spawn {spawn}")
        drain: list[str] = []
        remaining = len(active)
        idle = sorted(
            ((t, w) for w in active if (t := default_policy.idle_for(w, now)) is not None),
            key=lambda tw: (-tw[0], tw[1].id),
        )
        for t, w in idle:
            promoted = w.promoted_at if w.promoted_at is not None else w.created_at
            if now - promoted < self.scale_down_grace_s or remaining <= self.min_workers:
                continue
            # The seed's mistake 2: over capacity, an idle worker goes after 30 s, whatever it cost to boot.
            over = remaining > desired and t >= self.over_capacity_idle_s
            if over or t >= self.idle_timeout_s:
                drain.append(w.id)
                remaining -= 1
        if drain:
            reasons.append(f"seed: terminate {len(drain)} idle worker(s)")
        return _decision(spawn, drain, reasons, desired, len(active), history, now)


@dataclass
class KedaPolicy:
    """A KEDA ScaledObject on a Postgres count query, under HPA defaults."""

    name: str = "keda"
    poll_s: float = 30.0
    stabilization_down_s: float = 300.0
    min_replicas: int = 0
    _recommendations: list[tuple[float, int]] = field(default_factory=list)

    def cycle_interval_s(self, config: ScalingSettings) -> float:
        return self.poll_s

    def wake_debounce_s(self, config: ScalingSettings) -> float | None:
        return None

    def decide(self, ctx: PolicyContext) -> Decision:
        snapshot, workers, history, config, now = ctx.snapshot, ctx.workers, ctx.history, ctx.config, ctx.now
        replicas = sorted(
            (w for w in workers if w.state.counts_as_capacity()),
            # ReplicaSet scale-down order: not ready first, then the newest.
            key=lambda w: (w.state is not WorkerState.SPAWNING, -w.created_at, w.id),
        )
        current = len(replicas)
        metric = snapshot.queued + snapshot.in_progress
        raw = min(max(math.ceil(metric / 1), self.min_replicas), config.max_workers)
        self._recommendations.append((now, raw))
        self._recommendations = [(t, r) for t, r in self._recommendations if now - t <= self.stabilization_down_s]
        spawn = 0
        drain: list[str] = []
        if raw > current:
            spawn = min(raw - current, max(4, current))  # HPA default scale-up policy
            target = current + spawn
        else:
            target = max(r for _, r in self._recommendations)
            if target < current:
                drain = [w.id for w in replicas[: current - target]]
        reasons = [f"keda: metric {metric}, recommendation {raw}, replicas {current} -> {target}"]
        return _decision(spawn, drain, reasons, target, current, history, now)


def make_policy(name: str) -> Policy:
    """A fresh policy object by name: `default`, `previous`, `seed` or `keda`."""
    if name == "default":
        return DefaultPolicy()
    if name == "previous":
        return PreviousPolicy()
    if name == "seed":
        return SeedPolicy()
    if name == "keda":
        return KedaPolicy()
    raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
