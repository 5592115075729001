"""One test per mistake of the 17:55 incident. Each fails on the `seed` baseline and passes on ours.

Both directions are asserted: the seed policy really makes the mistake (so the test can catch it),
and the default policy does not.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from config.settings import ScalingSettings
from fleet import policy
from fleet.models import DemandSnapshot, FleetHistory, SpawnOutcome, SpawnOutcomeKind, WorkerState, WorkerView
from fleet.policy import PolicyContext
from sim import baselines

S = WorkerState
CFG = ScalingSettings(min_workers=0, max_workers=10, idle_timeout_s=60, scale_down_stabilization_s=60)
T0 = 1_760_637_306.0  # 2025-10-16 17:55:06 UTC


def double_spawns(p: baselines.Policy) -> bool:
    """17:55:06 and 17:55:32: one unit of new demand, two workers launched."""
    busy = WorkerView("gpu-174249", S.ACTIVE, T0 - 760, promoted_at=T0 - 700, tasks_in_progress=1)
    demand = DemandSnapshot(queued=1, claimable=1, in_progress=1)
    workers = [busy]
    history = FleetHistory()
    spawned = 0
    for now in (T0, T0 + 26, T0 + 56):  # the first pod boots 56 s after its request
        d = p.decide(PolicyContext(demand, workers, history, CFG, now))
        history = d.history
        spawned += d.spawn
        workers += [WorkerView(f"gpu-new-{now:.0f}-{i}", S.SPAWNING, now) for i in range(d.spawn)]
    return spawned > 1


def kills_shortly_after_promotion(p: baselines.Policy) -> bool:
    """17:58:09 promoted after a 157 s boot; 17:59:09 terminated, idle, while work kept arriving."""
    promoted = T0 + 26 + 157
    history = policy.record_outcomes(
        FleetHistory(last_scale_up_at=T0 + 26),
        [
            SpawnOutcome("gpu-175506", SpawnOutcomeKind.BOOTED, T0 + 56, 56.0),
            SpawnOutcome("gpu-175532", SpawnOutcomeKind.BOOTED, promoted, 157.0),
        ],
        promoted,
        CFG,
    )
    # The 17:42 worker and the first 17:55 worker are busy; the second 17:55 worker is idle.
    older = WorkerView("gpu-174249", S.ACTIVE, T0 - 737, promoted_at=T0 - 677, tasks_in_progress=1)
    first = WorkerView("gpu-175506", S.ACTIVE, T0, promoted_at=T0 + 56, tasks_in_progress=1)
    second = WorkerView("gpu-175532", S.ACTIVE, T0 + 26, promoted_at=promoted, idle_since=promoted)
    for now in range(int(promoted), int(promoted) + 150, 10):  # up to 2.5 min after promotion
        demand = DemandSnapshot(queued=0, claimable=0, in_progress=2)  # work keeps going
        d = p.decide(PolicyContext(demand, [older, first, second], history, CFG, float(now)))
        history = d.history
        if "gpu-175532" in d.drain:
            return True
    return False


def breaker_poisoned_by_scale_downs(p: baselines.Policy) -> bool:
    """Normal scale-downs in the last 30 minutes must not stop a needed scale-up."""
    events: list[tuple[str, float, str | None, str, str]] = []
    history = FleetHistory()
    now = T0 - 1500
    # Six workers that booted fine and were scaled down normally.
    for i in range(6):
        wid = f"gpu-old-{i}"
        start = now + 120 * i
        events += [
            (wid, start, None, "spawning", "spawn: decision"),
            (wid, start + 60, "spawning", "active", "promoted: first heartbeat 60s after creation"),
            (wid, start + 400, "active", "draining", "drain_requested: scale-down"),
            (wid, start + 401, "draining", "terminating", "drained: no task in progress"),
            (wid, start + 410, "terminating", "terminated", "terminated: provider confirmed"),
        ]
        alive = WorkerView(wid, S.ACTIVE, start, promoted_at=start + 60, idle_since=start + 60)
        p.decide(PolicyContext(DemandSnapshot(0, 0, 0), [alive], history, CFG, start + 100))  # the policy sees it live
        p.decide(PolicyContext(DemandSnapshot(0, 0, 0), [], history, CFG, start + 420))  # then gone
    history = policy.record_outcomes(history, policy.outcomes_from_events(events), T0, CFG)
    d = p.decide(PolicyContext(DemandSnapshot(queued=3, claimable=3, in_progress=0), [], history, CFG, T0))
    return d.spawn == 0


MISTAKES: list[Callable[[baselines.Policy], bool]] = [
    double_spawns,
    kills_shortly_after_promotion,
    breaker_poisoned_by_scale_downs,
]


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.__name__)
def test_seed_makes_the_mistake(mistake: Callable[[baselines.Policy], bool]) -> None:
    assert mistake(baselines.SeedPolicy()), "the seed baseline should reproduce the incident"


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.__name__)
def test_default_policy_does_not(mistake: Callable[[baselines.Policy], bool]) -> None:
    assert not mistake(baselines.DefaultPolicy())


def test_the_decision_alone_says_why_workers_were_launched() -> None:
    """'Why were 2 workers launched at 17:55?' answered from the decision row, with numbers."""
    busy = WorkerView("gpu-174249", S.ACTIVE, T0 - 760, promoted_at=T0 - 700, tasks_in_progress=1)
    demand = DemandSnapshot(queued=2, claimable=2, in_progress=1)
    d = policy.decide(PolicyContext(demand, [busy], FleetHistory(), CFG, T0))
    assert d.spawn == 2
    why = d.reasons[0]
    for fact in ("spawn 2", "desired 3", "claimable 2", "in_progress 1", "capacity 1", "active 1", "spawning 0"):
        assert fact in why
    assert "breaker closed" in why
    assert d.inputs["desired"] == 3 and d.inputs["capacity"] == 1 and d.inputs["workers_active"] == 1
