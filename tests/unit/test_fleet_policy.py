"""The scaling policy: unit cases with a fake clock and hypothesis properties of its invariants."""

from __future__ import annotations

from dataclasses import replace

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
    SpawnOutcome,
    SpawnOutcomeKind,
    WorkerState,
    WorkerView,
)
from fleet.policy import PolicyContext

S = WorkerState
CFG = ScalingSettings(
    min_workers=0, max_workers=10, max_spawns_per_cycle=4, idle_timeout_s=60, scale_down_stabilization_s=120
)


def active(wid: str, *, tasks: int = 0, idle_since: float | None = None, promoted_at: float = 0.0) -> WorkerView:
    return WorkerView(
        wid,
        S.ACTIVE,
        created_at=promoted_at - 100,
        promoted_at=promoted_at,
        tasks_in_progress=tasks,
        idle_since=None if tasks else idle_since,
    )


def spawning(wid: str, created_at: float) -> WorkerView:
    return WorkerView(wid, S.SPAWNING, created_at=created_at)


def apply(decision, workers: list[WorkerView], now: float) -> list[WorkerView]:
    """What the Scaler does with a decision: new spawning rows, drained workers leave capacity."""
    out = [replace(w, state=S.DRAINING) if w.id in decision.drain else w for w in workers]
    out += [spawning(f"new-{now:.0f}-{i}", now) for i in range(decision.spawn)]
    return out


def test_scale_up_from_zero_is_immediate_and_explained() -> None:
    demand = DemandSnapshot(queued=2, claimable=2, in_progress=0)
    d = policy.decide(PolicyContext(demand, [], FleetHistory(), CFG, 100.0))
    assert d.spawn == 2 and d.desired == 2 and d.capacity == 0
    assert "desired 2 = ceil((claimable 2 + in_progress 0) / tasks_per_worker 1)" in d.reasons[0]
    assert d.history.last_scale_up_at == 100.0
    assert d.inputs["claimable"] == 2 and d.inputs["breaker"] == "closed"


def test_clamps_and_spawn_limit_are_reported() -> None:
    d = policy.decide(PolicyContext(DemandSnapshot(30, 30, 0), [], FleetHistory(), CFG, 0.0))
    assert d.desired == 10 and d.spawn == 4
    assert "capped at max_workers 10" in d.reasons[0] and "max_spawns_per_cycle 4" in d.reasons[0]
    floor = CFG.model_copy(update=dict(min_workers=2))
    d = policy.decide(PolicyContext(DemandSnapshot(0, 0, 0), [], FleetHistory(), floor, 0.0))
    assert d.spawn == 2 and "raised to min_workers 2" in d.reasons[0]


def test_tasks_per_worker_divides_demand() -> None:
    cfg = CFG.model_copy(update=dict(tasks_per_worker=2))
    d = policy.decide(PolicyContext(DemandSnapshot(3, 3, 0), [], FleetHistory(), cfg, 0.0))
    assert d.spawn == 2


def test_breaker_opens_cools_down_and_probes_once() -> None:
    cfg = CFG.model_copy(update=dict(min_attempts_for_breaker=4, failure_rate_threshold=0.5, breaker_cooldown_s=300))
    fails = [SpawnOutcome(f"w{i}", SpawnOutcomeKind.SPAWN_TIMEOUT, 10.0 * i) for i in range(4)]
    h = policy.record_outcomes(FleetHistory(), fails, 100.0, cfg)
    demand = DemandSnapshot(3, 3, 0)
    d = policy.decide(PolicyContext(demand, [], h, cfg, 100.0))
    assert d.spawn == 0 and d.breaker.status is BreakerStatus.OPEN and "breaker opened" in d.reasons[0]
    d = policy.decide(PolicyContext(demand, [], d.history, cfg, 300.0))
    assert d.spawn == 0 and d.breaker.status is BreakerStatus.OPEN
    d = policy.decide(PolicyContext(demand, [], d.history, cfg, 401.0))
    assert d.spawn == 1 and d.breaker.status is BreakerStatus.HALF_OPEN  # exactly one probe
    probe = spawning("probe", 401.0)
    d2 = policy.decide(PolicyContext(demand, [probe], d.history, cfg, 411.0))
    assert d2.spawn == 0 and d2.breaker.probe_worker_id == "probe"
    booted = policy.record_outcomes(d2.history, [SpawnOutcome("probe", SpawnOutcomeKind.BOOTED, 500.0, 99.0)], 500, cfg)
    probe_up = active("probe", promoted_at=500.0, idle_since=500.0)
    d3 = policy.decide(PolicyContext(demand, [probe_up], booted, cfg, 501.0))
    assert d3.breaker.status is BreakerStatus.CLOSED and d3.spawn == 2
    failed = policy.record_outcomes(d2.history, [SpawnOutcome("probe", SpawnOutcomeKind.SPAWN_ERROR, 420.0)], 420, cfg)
    d4 = policy.decide(PolicyContext(demand, [], failed, cfg, 421.0))
    assert d4.breaker.status is BreakerStatus.OPEN and d4.spawn == 0


def test_outcomes_from_events_counts_only_real_failures() -> None:
    events = [
        ("a", 0.0, None, "spawning", "spawn: decision 7"),
        ("a", 90.0, "spawning", "active", "promoted: pod running and first heartbeat 90s after creation"),
        ("a", 400.0, "active", "draining", "drain_requested: scale-down; 0 task(s) in progress"),
        ("a", 401.0, "draining", "terminating", "drained: no task in progress after 1s draining"),
        ("a", 410.0, "terminating", "terminated", "terminated: provider confirmed the pod is gone after 9s"),
        ("b", 0.0, None, "spawning", "spawn: decision 7"),
        ("b", 612.0, "spawning", "error", "spawn_timeout: no heartbeat 612s after creation (limit 600s)"),
        ("b", 613.0, "error", "terminating", "error_cleanup: stopping the pod"),
    ]
    out = policy.outcomes_from_events(events)
    assert [(o.worker_id, o.kind) for o in out] == [
        ("a", SpawnOutcomeKind.BOOTED),
        ("b", SpawnOutcomeKind.SPAWN_TIMEOUT),
    ]
    assert out[0].boot_seconds == 90.0


def test_record_outcomes_dedupes_and_drops_old() -> None:
    cfg = CFG.model_copy(update=dict(failure_window_s=100))
    o = SpawnOutcome("a", SpawnOutcomeKind.BOOTED, 50.0, 80.0)
    h = policy.record_outcomes(FleetHistory(), [o, o], 60.0, cfg)
    assert len(h.outcomes) == 1 and h.boot_samples == (80.0,)
    h = policy.record_outcomes(h, [], 200.0, cfg)
    assert h.outcomes == () and h.boot_samples == (80.0,)  # the boot estimate outlives the window


def test_scale_down_longest_idle_first_after_stabilization() -> None:
    workers = [active("a", idle_since=0.0), active("b", idle_since=50.0), active("c", tasks=1)]
    h = FleetHistory(last_scale_up_at=900.0)
    d = policy.decide(PolicyContext(DemandSnapshot(0, 0, 1), workers, h, CFG, 1000.0))
    assert d.drain == () and "stabilization" in d.reasons[0]
    d = policy.decide(PolicyContext(DemandSnapshot(0, 0, 1), workers, FleetHistory(), CFG, 1000.0))
    assert d.drain == ("a", "b")
    assert "c" not in d.drain


# ---- properties


def _worker(draw_state: S, i: int, now: float, tasks: int, idle: float) -> WorkerView:
    if draw_state is S.ACTIVE:
        return active(f"w{i}", tasks=tasks, idle_since=now - idle, promoted_at=now - idle - 1)
    return WorkerView(
        f"w{i}", draw_state, created_at=now - idle, tasks_in_progress=tasks if draw_state is S.DRAINING else 0
    )


fleets = st.lists(
    st.tuples(
        st.sampled_from([S.SPAWNING, S.ACTIVE, S.ACTIVE, S.DRAINING, S.ERROR, S.TERMINATING]),
        st.integers(0, 2),
        st.floats(0, 2000),
    ),
    max_size=12,
)
snapshots = st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 12))
configs = st.builds(
    lambda lo, span, spc, tpw, cooldown, attempts, threshold: ScalingSettings(
        min_workers=lo,
        max_workers=lo + span,
        max_spawns_per_cycle=spc,
        tasks_per_worker=tpw,
        idle_timeout_s=60,
        scale_down_stabilization_s=0,
        breaker_cooldown_s=cooldown,
        min_attempts_for_breaker=attempts,
        failure_rate_threshold=threshold,
    ),
    st.integers(0, 3),
    st.integers(0, 8),
    st.integers(1, 5),
    st.integers(1, 3),
    st.sampled_from([0.0, 60.0, 300.0, 900.0]),
    st.integers(1, 4),
    st.sampled_from([0.25, 0.5, 1.0]),
)
# Probe and outcome worker ids: some name a worker of the drawn fleet (w0..w11), "gone" none.
_ids = st.sampled_from(["w0", "w1", "w2", "w5", "gone"])
_times = st.floats(0, 3000)
breakers = st.one_of(
    st.builds(BreakerState),  # closed, as a fresh Scaler starts
    st.builds(lambda since: BreakerState(counting_since=since), _times),  # closed again after a probe booted
    st.builds(lambda opened: BreakerState(status=BreakerStatus.OPEN, opened_at=opened), _times),
    # half-open: no probe out yet, or a probe issued at some time and perhaps already seen as a worker
    st.builds(
        lambda opened, issued, probe: BreakerState(
            status=BreakerStatus.HALF_OPEN,
            opened_at=opened,
            probe_issued_at=issued,
            probe_worker_id=probe if issued is not None else None,
        ),
        _times,
        st.none() | _times,
        st.none() | _ids,
    ),
)
outcome_lists = st.lists(
    st.builds(SpawnOutcome, _ids, st.sampled_from(SpawnOutcomeKind), _times),
    max_size=8,
    unique_by=lambda o: (o.worker_id, o.kind),
).map(lambda outcomes: tuple(sorted(outcomes, key=lambda o: o.at)))  # sorted, as record_outcomes keeps them
histories = st.builds(
    lambda up, demand, breaker, outcomes: FleetHistory(
        last_scale_up_at=up, last_demand_at=demand, breaker=breaker, outcomes=outcomes
    ),
    st.none() | _times,
    st.none() | _times,
    breakers,
    outcome_lists,
)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(fleets, snapshots, configs, histories)
def test_invariants(fleet, snap, cfg, history) -> None:
    now = 3000.0
    workers = [_worker(s, i, now, t, idle) for i, (s, t, idle) in enumerate(fleet)]
    queued, extra, in_progress = snap
    snapshot = DemandSnapshot(queued=queued + extra, claimable=queued, in_progress=in_progress)
    d = policy.decide(PolicyContext(snapshot, workers, history, cfg, now))
    by_id = {w.id: w for w in workers}
    capacity = sum(1 for w in workers if w.state.counts_as_capacity())
    draining = sum(1 for w in workers if w.state is S.DRAINING)
    # clamps
    assert 0 <= d.spawn <= cfg.max_spawns_per_cycle
    # max_workers bounds every spawn, the half-open probe's too (draining pods hold a GPU: they count).
    assert capacity + d.spawn + draining <= max(cfg.max_workers, capacity + draining)
    # The kind is what the policy did: a spawn is never "steady", nor is demand held back by a limit.
    if d.spawn:
        assert d.kind in (DecisionKind.SCALE_UP, DecisionKind.PROBE)
    elif d.drain:
        assert d.kind is DecisionKind.SCALE_DOWN
    else:
        assert d.kind is not DecisionKind.SCALE_UP and d.kind is not DecisionKind.SCALE_DOWN
        if d.kind is DecisionKind.STEADY:
            assert d.desired <= capacity and not d.reasons[-1].startswith("capped")
    assert cfg.min_workers <= d.desired <= cfg.max_workers
    # never drain a busy worker, never a spawning one, never below min (or below desired)
    for wid in d.drain:
        assert by_id[wid].state is S.ACTIVE and by_id[wid].tasks_in_progress == 0
    assert capacity - len(d.drain) >= min(capacity, cfg.min_workers)
    assert capacity - len(d.drain) >= min(capacity, d.desired)
    assert not (d.spawn and d.drain)
    # no double spawn: apply, decide again on the same demand, the fleet does not exceed what was due
    after = apply(d, workers, now)
    d2 = policy.decide(PolicyContext(snapshot, after, d.history, cfg, now + cfg.cycle_interval_s))
    due = max(0, d.desired - capacity)
    assert d.spawn + d2.spawn <= due


@PROPS
@given(st.lists(st.tuples(st.floats(0, 1000), st.floats(1, 300)), max_size=30))
def test_breaker_never_counts_scale_downs(lives) -> None:
    events = []
    for i, (start, life) in enumerate(lives):
        wid = f"w{i}"
        events += [
            (wid, start, None, "spawning", "spawn: decision"),
            (wid, start + 60, "spawning", "active", "promoted: first heartbeat 60s after creation"),
            (wid, start + 60 + life, "active", "draining", "drain_requested: scale-down"),
            (wid, start + 61 + life, "draining", "terminating", "drained: no task in progress"),
            (wid, start + 70 + life, "terminating", "terminated", "terminated: provider confirmed"),
        ]
    cfg = ScalingSettings(min_attempts_for_breaker=1, failure_rate_threshold=0.01)
    outcomes = policy.outcomes_from_events(events)
    assert all(o.kind is SpawnOutcomeKind.BOOTED for o in outcomes)
    h = policy.record_outcomes(FleetHistory(), outcomes, 1500.0, cfg)
    d = policy.decide(PolicyContext(DemandSnapshot(1, 1, 0), [], h, cfg, 1500.0))
    assert d.breaker.status is BreakerStatus.CLOSED and d.spawn == 1


@PROPS
@given(fleets, snapshots, configs, histories)
def test_breaker_gates_spawns(fleet, snap, cfg, history) -> None:
    """Open: no spawn. Half-open: one probe at most, never a second while it is out. Open is never
    closed without a probe, and stays open through the cooldown."""
    now = 3000.0
    workers = [_worker(s, i, now, t, idle) for i, (s, t, idle) in enumerate(fleet)]
    queued, extra, in_progress = snap
    snapshot = DemandSnapshot(queued=queued + extra, claimable=queued, in_progress=in_progress)
    before = history.breaker
    d = policy.decide(PolicyContext(snapshot, workers, history, cfg, now))
    after = d.breaker
    if after.status is BreakerStatus.OPEN:
        assert d.spawn == 0
    if after.status is BreakerStatus.HALF_OPEN:
        assert d.spawn <= 1
        if d.spawn:
            assert after.probe_issued_at == now and after.probe_worker_id is None
    if before.status is BreakerStatus.OPEN:
        assert after.status in (BreakerStatus.OPEN, BreakerStatus.HALF_OPEN)
        assert before.opened_at is not None
        if now - before.opened_at < cfg.breaker_cooldown_s:
            assert after.status is BreakerStatus.OPEN and d.spawn == 0
    if d.spawn and after.status is BreakerStatus.HALF_OPEN:
        # The probe is out (and counts as capacity): the next cycle on the same facts waits for it.
        d2 = policy.decide(PolicyContext(snapshot, apply(d, workers, now), d.history, cfg, now + cfg.cycle_interval_s))
        assert d2.spawn == 0 and d2.breaker.status is BreakerStatus.HALF_OPEN
        assert d2.breaker.probe_worker_id == f"new-{now:.0f}-0"


def test_each_decision_carries_its_kind() -> None:
    up = policy.decide(PolicyContext(DemandSnapshot(2, 2, 0), [], FleetHistory(), CFG, 100.0))
    assert up.kind is DecisionKind.SCALE_UP
    steady = policy.decide(PolicyContext(DemandSnapshot(0, 0, 0), [], FleetHistory(), CFG, 100.0))
    assert steady.kind is DecisionKind.STEADY and steady.reasons[0].startswith("steady")
    idle = [active("a", idle_since=0.0)]
    down = policy.decide(PolicyContext(DemandSnapshot(0, 0, 0), idle, FleetHistory(), CFG, 1000.0))
    assert down.kind is DecisionKind.SCALE_DOWN and down.drain == ("a",)
    held = policy.decide(
        PolicyContext(DemandSnapshot(0, 0, 0), idle, FleetHistory(last_scale_up_at=990.0), CFG, 1000.0)
    )
    assert held.kind is DecisionKind.SCALE_DOWN_HELD and held.drain == ()
    opened = BreakerState(status=BreakerStatus.OPEN, opened_at=900.0)
    shut = policy.decide(PolicyContext(DemandSnapshot(2, 2, 0), [], FleetHistory(breaker=opened), CFG, 1000.0))
    assert shut.kind is DecisionKind.BREAKER_OPEN and shut.spawn == 0


def test_a_spawn_capped_at_max_workers_is_capped_not_steady() -> None:
    cfg = CFG.model_copy(update=dict(max_workers=2))
    busy = [active("a", tasks=1), active("b", tasks=1)]
    d = policy.decide(PolicyContext(DemandSnapshot(5, 5, 2), busy, FleetHistory(), cfg, 100.0))
    assert d.spawn == 0 and d.kind is DecisionKind.CAPPED
    assert d.reasons[0].startswith("capped: no spawn: demand asks for 7") and "max_workers 2" in d.reasons[0]
    assert not any(r.startswith("steady") for r in d.reasons)
    # Draining pods hold a GPU too: one active, one draining and max_workers 2 leaves no room either.
    d = policy.decide(
        PolicyContext(
            DemandSnapshot(3, 3, 1),
            [active("a", tasks=1), WorkerView("b", S.DRAINING, 0.0)],
            FleetHistory(),
            cfg,
            100.0,
        )
    )
    assert d.spawn == 0 and d.kind is DecisionKind.CAPPED and "draining 1" in d.reasons[0]


def test_the_half_open_probe_respects_max_workers() -> None:
    """max_workers 2, min_workers 2, one spawning and one draining worker, breaker open with cooldown 0:
    the probe would be a third pod. It waits for room (not issued), then goes."""
    cfg = CFG.model_copy(update=dict(max_workers=2, min_workers=2, breaker_cooldown_s=0.0))
    history = FleetHistory(breaker=BreakerState(status=BreakerStatus.OPEN, opened_at=50.0))
    workers = [spawning("s", 90.0), WorkerView("d", S.DRAINING, 0.0)]
    d = policy.decide(PolicyContext(DemandSnapshot(0, 0, 0), workers, history, cfg, 100.0))
    assert d.spawn == 0 and d.kind is DecisionKind.CAPPED
    assert d.breaker.status is BreakerStatus.HALF_OPEN and d.breaker.probe_issued_at is None
    # The draining pod is gone: now there is room, and the one probe goes.
    d2 = policy.decide(PolicyContext(DemandSnapshot(0, 0, 0), [spawning("s", 90.0)], d.history, cfg, 101.0))
    assert d2.spawn == 1 and d2.kind is DecisionKind.PROBE and d2.breaker.probe_issued_at == 101.0
    d3 = policy.decide(
        PolicyContext(DemandSnapshot(0, 0, 0), apply(d2, [spawning("s", 90.0)], 101.0), d2.history, cfg, 102.0)
    )
    assert d3.spawn == 0 and d3.kind is DecisionKind.STEADY  # desired 2 = capacity 2: nothing wanted


def test_a_decision_built_elsewhere_that_spawns_is_never_steady() -> None:
    from fleet.models import Decision

    d = Decision(spawn=1, drain=(), reasons=("x",), breaker=BreakerState(), desired=1, capacity=0)
    assert d.kind is DecisionKind.SCALE_UP
    assert Decision(spawn=0, drain=("a",), reasons=(), breaker=BreakerState(), desired=0, capacity=1).kind is (
        DecisionKind.SCALE_DOWN
    )


def test_demand_held_back_at_max_workers_is_recorded_once() -> None:
    from fleet import supervision

    cfg = CFG.model_copy(update=dict(max_workers=2))
    busy = [active("a", tasks=1), active("b", tasks=1)]
    d = policy.decide(PolicyContext(DemandSnapshot(5, 5, 2), busy, FleetHistory(), cfg, 100.0))
    assert d.kind is DecisionKind.CAPPED and d.desired == d.capacity  # desired is already clamped
    assert supervision.should_record(d, None), "a capped fleet is a wish worth a row, once"
    again = policy.decide(PolicyContext(DemandSnapshot(5, 5, 2), busy, d.history, cfg, 101.0))
    assert not supervision.should_record(again, supervision.decision_record_key(d))
    steady = policy.decide(PolicyContext(DemandSnapshot(0, 0, 2), busy, FleetHistory(), cfg, 100.0))
    assert steady.kind is DecisionKind.STEADY and not supervision.should_record(steady, None)
