"""The default policy with a warm pool: resume before spawn, park while the pool has room, retire
what it cannot keep; properties over generated fleets."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import ScalingSettings
from fleet import policy
from fleet.models import (
    BreakerState,
    BreakerStatus,
    DecisionKind,
    DemandSnapshot,
    FleetHistory,
    WorkerState,
    WorkerView,
)
from fleet.policy import PolicyContext

S = WorkerState
WARM = ScalingSettings(
    min_workers=0,
    max_workers=10,
    max_spawns_per_cycle=4,
    idle_timeout_s=60,
    scale_down_stabilization_s=0,
    warm_pool_size=2,
    warm_pool_keep_s=3600,
)


def stopped(wid: str, since: float) -> WorkerView:
    return WorkerView(wid, S.STOPPED, created_at=since - 500, promoted_at=since - 400, state_since=since)


def idle(wid: str, since: float, promoted_at: float = 0.0) -> WorkerView:
    return WorkerView(
        wid, S.ACTIVE, created_at=promoted_at - 100, promoted_at=promoted_at, idle_since=since, state_since=promoted_at
    )


def test_demand_resumes_the_newest_stopped_workers_before_spawning() -> None:
    workers = [stopped("old", 1_000.0), stopped("new", 2_000.0)]
    demand = DemandSnapshot(queued=3, claimable=3, in_progress=0)
    d = policy.decide(PolicyContext(demand, workers, FleetHistory(), WARM, 3_000.0))
    assert d.resume == ("new", "old") and d.spawn == 1 and d.kind is DecisionKind.SCALE_UP
    assert any(r.startswith("scale_up: resume 2 stopped worker(s) (new, old)") for r in d.reasons)
    # one task: only the newest comes back, nothing is created
    one = policy.decide(PolicyContext(DemandSnapshot(1, 1, 0), workers, FleetHistory(), WARM, 3_000.0))
    assert one.resume == ("new",) and one.spawn == 0 and one.retire == ()
    assert one.history.last_scale_up_at == 3_000.0


def test_resumes_go_ahead_with_the_breaker_open_but_spawns_do_not() -> None:
    history = FleetHistory(breaker=BreakerState(status=BreakerStatus.OPEN, opened_at=2_900.0))
    d = policy.decide(PolicyContext(DemandSnapshot(3, 3, 0), [stopped("s", 2_000.0)], history, WARM, 3_000.0))
    assert d.resume == ("s",) and d.spawn == 0 and d.kind is DecisionKind.SCALE_UP
    assert any("breaker open" in r for r in d.reasons)


def test_drained_workers_are_parked_while_the_pool_has_room_and_terminated_beyond() -> None:
    workers = [idle(f"w{i}", since=100.0) for i in range(3)] + [stopped("s", 500.0)]
    d = policy.decide(PolicyContext(DemandSnapshot(0, 0, 0), workers, FleetHistory(), WARM, 1_000.0))
    assert len(d.drain) == 3 and len(d.park) == 1 and set(d.park) <= set(d.drain)
    assert d.retire == () and d.kind is DecisionKind.SCALE_DOWN


def test_stopped_workers_kept_too_long_or_beyond_the_size_are_retired() -> None:
    workers = [stopped("a", 100.0), stopped("b", 3_000.0), stopped("c", 3_500.0), stopped("d", 3_600.0)]
    d = policy.decide(PolicyContext(DemandSnapshot(0, 0, 0), workers, FleetHistory(), WARM, 4_000.0))
    # the two newest are kept; "a" is also past warm_pool_keep_s
    assert set(d.retire) == {"a", "b"} and d.kind is DecisionKind.SCALE_DOWN
    off = WARM.model_copy(update={"warm_pool_size": 0})
    d0 = policy.decide(PolicyContext(DemandSnapshot(0, 0, 0), workers, FleetHistory(), off, 4_000.0))
    assert set(d0.retire) == {"a", "b", "c", "d"} and d0.resume == () and d0.park == ()


def test_resume_times_are_measured_from_resuming_to_active() -> None:
    history = FleetHistory(resuming=(("r", 1_000.0),))
    back = WorkerView("r", S.ACTIVE, created_at=0.0, promoted_at=100.0, state_since=1_034.0, idle_since=1_034.0)
    d = policy.decide(PolicyContext(DemandSnapshot(1, 0, 1), [back], history, WARM, 1_040.0))
    assert d.history.resume_samples == (34.0,)
    assert policy.resume_estimate(d.history, WARM) == 34.0


fleets = st.lists(
    st.tuples(
        st.sampled_from([S.SPAWNING, S.ACTIVE, S.DRAINING, S.STOPPING, S.STOPPED, S.RESUMING]),
        st.integers(0, 1),
        st.floats(0, 5_000),
    ),
    max_size=14,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fleet=fleets,
    claimable=st.integers(0, 20),
    in_progress=st.integers(0, 5),
    size=st.integers(0, 5),
    open_breaker=st.booleans(),
)
def test_warm_pool_decisions_stay_within_demand_pool_and_fleet(
    fleet: list[tuple[S, int, float]], claimable: int, in_progress: int, size: int, open_breaker: bool
) -> None:
    now = 10_000.0
    workers = [
        WorkerView(
            f"w{i}",
            state,
            created_at=since - 300,
            promoted_at=None if state is S.SPAWNING else since - 200,
            tasks_in_progress=tasks if state in (S.ACTIVE, S.DRAINING) else 0,
            idle_since=since if state is S.ACTIVE and not tasks else None,
            state_since=since,
        )
        for i, (state, tasks, since) in enumerate(fleet)
    ]
    busy = sum(w.tasks_in_progress for w in workers)
    cfg = WARM.model_copy(update={"warm_pool_size": size})
    breaker = BreakerState(status=BreakerStatus.OPEN, opened_at=now) if open_breaker else BreakerState()
    demand = DemandSnapshot(queued=claimable, claimable=claimable, in_progress=in_progress + busy)
    d = policy.decide(PolicyContext(demand, workers, FleetHistory(breaker=breaker), cfg, now))
    by_id = {w.id: w for w in workers}
    assert all(by_id[i].state is S.STOPPED for i in d.resume)
    assert all(by_id[i].state is S.STOPPED for i in d.retire) and not set(d.resume) & set(d.retire)
    assert set(d.park) <= set(d.drain)
    capacity = sum(1 for w in workers if w.state.counts_as_capacity())
    # never more workers coming than demand asks for, and never past max_workers
    assert d.spawn + len(d.resume) <= max(0, d.desired - capacity)
    holding_gpu = capacity + sum(1 for w in workers if w.state in (S.DRAINING, S.STOPPING))
    assert holding_gpu + d.spawn + len(d.resume) <= max(cfg.max_workers, holding_gpu)
    if open_breaker:
        assert d.spawn == 0
    # what the pool keeps after this decision fits warm_pool_size (unless pods are still stopping)
    stopping = sum(1 for w in workers if w.state is S.STOPPING)
    kept = sum(1 for w in workers if w.state is S.STOPPED) - len(d.resume) - len(d.retire)
    assert kept + stopping + len(d.park) <= max(size, stopping) or (size == 0 and kept == 0)


def test_resume_times_are_rebuilt_from_worker_events_after_a_restart() -> None:
    events = [
        ("a", 100.0, "stopped", "resuming", "resume_requested: demand"),
        ("a", 130.0, "resuming", "active", "resumed: first heartbeat"),
        ("b", 200.0, "spawning", "active", "promoted: first heartbeat"),  # a boot, not a resume
        ("c", 300.0, "stopped", "resuming", "resume_requested: demand"),
        ("c", 302.0, "resuming", "error", "resume_failed: no free GPU"),
        ("a", 400.0, "stopped", "resuming", "resume_requested: demand"),
        ("a", 445.0, "resuming", "active", "resumed: first heartbeat"),
    ]
    samples = policy.resume_samples_from_events(reversed(events))
    assert samples == (30.0, 45.0)
    assert policy.resume_estimate(FleetHistory(resume_samples=samples), WARM) == 45.0
    assert policy.resume_estimate(FleetHistory(), WARM) == WARM.default_resume_time_s
