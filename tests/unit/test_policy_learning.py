"""What the policy learns (`fleet.learning`) and how `decide` uses it: property tests over generated
histories (breaker closed, open and half-open; learned state rebuilt after a restart), and the
learned policy against the one before it in the simulator."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import ScalingSettings
from fleet import learning, policy
from fleet.models import (
    BreakerState,
    BreakerStatus,
    DemandMemory,
    DemandSnapshot,
    FleetHistory,
    WorkerState,
    WorkerView,
)
from sim import engine
from sim import trace as sim_trace
from sim.baselines import make_policy

PROPS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONFIG = ScalingSettings()


def _rises(period: float, horizon: float, burst: int = 1) -> DemandMemory:
    """Demand that rises by `burst` every `period` seconds and falls back 60 s later."""
    points = []
    t = 0.0
    while t < horizon:
        points += [(t, burst), (t + 60.0, 0)]
        t += period
    return DemandMemory(points=tuple(points))


def test_headroom_follows_how_often_demand_rises() -> None:
    # Demand rising every 100 s: a rise within a boot time is the rule, keep one idle worker.
    assert learning.headroom(_rises(100, 3600), 3600, 150) == 1
    # A burst of 8 every 40 minutes, long after the last one: keep none.
    assert learning.headroom(_rises(2400, 7000, burst=8), 7000, 150) == 0
    # Too little remembered: no learned headroom, the policy keeps its fixed rule.
    assert learning.headroom(_rises(100, 300), 300, 150) is None
    assert learning.headroom(DemandMemory(), 0, 150) is None


def _busy(wid: str, started: float, task_type: str = "seg", **kw: float) -> WorkerView:
    return WorkerView(
        wid,
        WorkerState.ACTIVE,
        created_at=0,
        promoted_at=10,
        tasks_in_progress=1,
        task_started_at=started,
        task_type=task_type,
        **kw,  # type: ignore[arg-type]
    )


def _idle(wid: str, since: float, promoted: float = 10.0) -> WorkerView:
    return WorkerView(wid, WorkerState.ACTIVE, created_at=0, promoted_at=promoted, idle_since=since)


def test_durations_are_learned_per_type_and_serve_queued_tasks() -> None:
    memory = DemandMemory()
    t = 0.0
    for _ in range(6):  # six 100 s tasks of type seg, back to back on one worker
        memory = learning.observe(memory, 1, [_busy("w1", t)], t + 1)
        t += 100.0
    memory = learning.observe(memory, 0, [_idle("w1", t)], t + 1)
    assert dict(memory.durations)["seg"] == (100.0,) * 6

    def served(worker: WorkerView, now: float, min_run_s: float = 0.0, waiting: int = 1) -> int:
        return learning.project_queue(memory, [worker], now, waiting, 60, min_run_s).served

    # 90 s into a seg task, a 60 s horizon: it surely ends first and takes one queued task, not two
    assert served(_busy("w2", 1000), 1090) == 1
    assert served(_busy("w2", 1000), 1090, waiting=2) == 1
    # 5 s into it: it does not
    assert served(_busy("w2", 1000), 1005) == 0
    # an unknown type promises nothing
    assert served(_busy("w2", 1000, "other"), 1090) == 0
    # a type that runs shorter than the fastest boot promises nothing: a stream of them needs the pod
    assert served(_busy("w2", 1000), 1090, min_run_s=120) == 0


def test_several_busy_workers_together_free_one_for_a_queued_task() -> None:
    """Runs of 101..300 s, each worker 150 s in: each frees within 60 s with probability 0.4, so one
    alone promises nothing, but one of six frees with probability 1 - 0.6^6 = 0.95."""
    memory = DemandMemory(durations=(("seg", tuple(float(d) for d in range(101, 301))),))
    one = learning.project_queue(memory, [_busy("w0", 1000)], 1150, 1, 60, confidence=0.9)
    assert (one.served, one.freeing, one.need) == (0, ("w0",), 1)
    six = [_busy(f"w{i}", 1000) for i in range(6)]
    projection = learning.project_queue(memory, six, 1150, 3, 60, confidence=0.9)
    assert (projection.waiting, projection.served, projection.need) == (3, 1, 2)
    assert len(projection.freeing) == 6


def test_a_large_fleet_weighs_only_the_workers_likeliest_to_free() -> None:
    memory = DemandMemory(durations=(("seg", (100.0,) * 6),))
    busy = [_busy(f"w{i:03d}", 1000) for i in range(3 * learning.PROJECTION_MAX_WORKERS)]  # all end at 1100
    projection = learning.project_queue(memory, busy, 1050, 1000, 60)
    assert projection.served == len(projection.freeing) == learning.PROJECTION_MAX_WORKERS
    assert projection.need == 1000 - learning.PROJECTION_MAX_WORKERS


def test_queued_tasks_wait_longer_for_freeing_workers_the_longer_they_have_waited() -> None:
    """The horizon counts from when a task became claimable: a task that has waited most of it is
    served only by a worker that frees in what is left."""
    memory = DemandMemory(durations=(("seg", (100.0,) * 6),))
    worker = [_busy("w1", 1000)]  # ends at 1100
    assert learning.project_queue(memory, worker, 1050, 1, 60).served == 1
    assert learning.project_queue(memory, worker, 1050, 1, 60, waited=[30.0]).served == 0


def test_queue_ages_follow_fifo_claims() -> None:
    assert learning.queue_ages((), 2, 100.0) == (100.0, 100.0)
    assert learning.queue_ages((100.0, 100.0), 3, 110.0) == (100.0, 100.0, 110.0)  # one more arrived
    assert learning.queue_ages((100.0, 100.0, 110.0), 1, 120.0) == (110.0,)  # the two oldest were claimed
    assert learning.queue_ages((110.0,), 0, 130.0) == ()


def test_a_worker_freeing_before_a_likely_boot_is_capacity_on_its_way_even_with_headroom() -> None:
    """One queued task, every worker busy: no spawn when a busy worker's task ends (at the learned
    durations) within halfway from the fastest boot to the median one, even when the learned
    headroom wants idle workers (the policy never spawns for headroom); a spawn when it does not."""
    memory = replace(_rises(100, 3600), durations=(("seg", (100.0,) * 6),))
    boots = (60.0, 100.0, 140.0)  # fastest 60, median 100: horizon 80
    history = FleetHistory(learned=memory, boot_samples=boots)
    assert learning.headroom(memory, 3600, policy.boot_estimate(history, CONFIG)) == 1
    snapshot = DemandSnapshot(queued=1, claimable=1, in_progress=2, taken_at=3600)

    def spawned(elapsed: float) -> int:
        workers = [_busy("w1", 3600 - elapsed), _busy("w2", 3600 - 1)]
        d = policy.decide(policy.PolicyContext(snapshot, workers, history, CONFIG, 3600))
        assert d.inputs["coming_horizon_s"] == 80.0
        return d.spawn

    assert spawned(30) == 0  # 70 s left of a 100 s task: freed before a pod would likely be up
    assert spawned(5) == 1  # 95 s left: a new pod is likely sooner


def test_memory_is_bounded() -> None:
    memory = DemandMemory()
    for k in range(3 * learning.MAX_POINTS):
        memory = learning.observe(memory, k % 2, [], float(k))
    assert len(memory.points) <= learning.MAX_POINTS
    memory = learning.observe(memory, 5, [], 1e6)
    # past the horizon only the demand at its start is kept (the last change before it)
    assert memory.points == ((3 * learning.MAX_POINTS - 1.0, 1), (1e6, 5))


# ---- generated histories


@st.composite
def contexts(draw: st.DrawFn) -> tuple[policy.PolicyContext, FleetHistory]:
    now = 10_000.0
    n = draw(st.integers(0, 8))
    workers = []
    for i in range(n):
        state = draw(
            st.sampled_from([WorkerState.SPAWNING, WorkerState.ACTIVE, WorkerState.ACTIVE, WorkerState.DRAINING])
        )
        created = now - draw(st.floats(0, 3000))
        promoted = None if state is WorkerState.SPAWNING else min(now, created + draw(st.floats(30, 200)))
        busy = state is not WorkerState.SPAWNING and draw(st.booleans())
        started = now - draw(st.floats(0, 400)) if busy else None
        workers.append(
            WorkerView(
                f"w{i}",
                state,
                created_at=created,
                promoted_at=promoted,
                tasks_in_progress=int(busy),
                idle_since=None if busy or promoted is None else max(promoted, now - draw(st.floats(0, 900))),
                task_started_at=started,
                task_type=draw(st.sampled_from(["a", "b"])) if busy else None,
            )
        )
    in_progress = sum(w.tasks_in_progress for w in workers)
    claimable = draw(st.integers(0, 12))
    snapshot = DemandSnapshot(queued=claimable + draw(st.integers(0, 5)), claimable=claimable, in_progress=in_progress)
    breaker = draw(
        st.sampled_from(
            [
                BreakerState(),
                BreakerState(status=BreakerStatus.OPEN, opened_at=now - 60),
                BreakerState(status=BreakerStatus.OPEN, opened_at=now - 4000),  # cooldown over: half-open
                BreakerState(status=BreakerStatus.HALF_OPEN),
                BreakerState(status=BreakerStatus.HALF_OPEN, probe_issued_at=now - 30),
            ]
        )
    )
    # a learned memory: demand that rose every `period` seconds over the last two hours
    period = draw(st.sampled_from([60.0, 300.0, 2400.0]))
    points = tuple(
        (now - 7000 + k * period + j * 30, draw(st.integers(0, 6))) for k in range(int(7000 // period)) for j in (0, 1)
    )
    durations = (("a", tuple(draw(st.lists(st.floats(10, 400), min_size=0, max_size=10)))),)
    learned = DemandMemory(points=tuple(sorted(points)), durations=durations)
    history = FleetHistory(
        breaker=breaker,
        boot_samples=tuple(draw(st.lists(st.floats(56, 157), max_size=5))),
        last_scale_up_at=draw(st.sampled_from([None, now - 30, now - 1000])),
        learned=learned if draw(st.booleans()) else DemandMemory(),
    )
    config = ScalingSettings(
        min_workers=draw(st.integers(0, 2)),
        max_workers=draw(st.integers(2, 10)),
        idle_timeout_s=draw(st.sampled_from([0.0, 60.0, 240.0])),
    )
    return policy.PolicyContext(snapshot, workers, history, config, now), history


@PROPS
@given(contexts())
def test_decide_keeps_its_promises_with_what_it_learned(generated: tuple[policy.PolicyContext, FleetHistory]) -> None:
    ctx, _ = generated
    d = policy.decide(ctx)
    assert d == policy.decide(ctx)  # pure: the same context, the same decision
    capacity = [w for w in ctx.workers if w.state.counts_as_capacity()]
    draining = sum(1 for w in ctx.workers if w.state is WorkerState.DRAINING)
    # no spawn beyond demand, none past max_workers
    assert d.spawn <= max(0, d.desired - len(capacity))
    assert len(capacity) + draining + d.spawn <= max(ctx.config.max_workers, len(capacity) + draining)
    if ctx.history.breaker.status is BreakerStatus.OPEN and ctx.now - (ctx.history.breaker.opened_at or 0) < 300:
        assert d.spawn == 0
    if ctx.history.breaker.status is BreakerStatus.HALF_OPEN:
        assert d.spawn <= 1
    by_id = {w.id: w for w in ctx.workers}
    for wid in d.drain:
        w = by_id[wid]
        assert w.state is WorkerState.ACTIVE and w.tasks_in_progress == 0  # idle, never busy
        if d.inputs["learned_headroom"] is not None or ctx.config.idle_timeout_s >= 120:
            assert w.promoted_at is not None and ctx.now - w.promoted_at >= learning.MIN_ACTIVE_BEFORE_DRAIN_S
    assert len(capacity) - len(d.drain) >= min(ctx.config.min_workers, len(capacity))
    # what was learned is carried on, bounded
    assert len(d.history.learned.points) <= learning.MAX_POINTS
    assert all(len(s) <= learning.DURATION_SAMPLES_KEPT for _, s in d.history.learned.durations)


@PROPS
@given(contexts())
def test_a_queued_task_waits_only_for_busy_workers_that_may_free_before_a_boot(
    generated: tuple[policy.PolicyContext, FleetHistory],
) -> None:
    """The queue projection holds back no more claimable tasks than there are busy workers whose task
    may end within the horizon (none when no capacity frees before a likely boot), and every task it
    does not hold gets its pod, within the per-cycle and max_workers limits: never one beyond."""
    ctx, _ = generated
    d = policy.decide(ctx)
    served, freeing = d.inputs["capacity_on_its_way"], d.inputs["projected_freeing"]
    assert isinstance(served, int) and isinstance(freeing, int)
    busy = [w for w in ctx.workers if w.state is WorkerState.ACTIVE and w.tasks_in_progress == 1]
    assert served <= min(freeing, ctx.snapshot.claimable, len(busy))
    if d.breaker.status is BreakerStatus.CLOSED:
        capacity = sum(1 for w in ctx.workers if w.state.counts_as_capacity())
        draining = sum(1 for w in ctx.workers if w.state is WorkerState.DRAINING)
        room = max(0, ctx.config.max_workers - capacity - draining)
        unserved = max(0, d.desired - capacity - served)
        assert d.spawn == min(unserved, ctx.config.max_spawns_per_cycle, room)


@PROPS
@given(contexts(), st.lists(st.integers(0, 6), min_size=80, max_size=200))
def test_learned_state_survives_a_restart(
    generated: tuple[policy.PolicyContext, FleetHistory], demands: list[int]
) -> None:
    """Run cycles, record every decision's inputs as the Scaler does; a restarted Scaler rebuilds
    the same demand memory from them and so keeps the same headroom."""
    ctx, _ = generated
    history = replace(ctx.history, learned=DemandMemory())
    recorded: list[tuple[float, dict[str, float | int | str | None]]] = []
    now = ctx.now
    for demand in demands:
        now += 30.0
        snapshot = DemandSnapshot(queued=demand, claimable=demand, in_progress=0, taken_at=now)
        d = policy.decide(policy.PolicyContext(snapshot, [], history, ctx.config, now))
        history = d.history
        recorded.append((now, d.inputs))
    rebuilt = learning.memory_from_decisions(recorded, now)
    assert rebuilt.points == history.learned.points
    assert rebuilt.queued_since == history.learned.queued_since  # how long the queued tasks have waited
    window = policy.boot_estimate(history, ctx.config)
    assert learning.headroom(rebuilt, now, window) == learning.headroom(history.learned, now, window)


# ---- in the simulator


@pytest.mark.parametrize("trace", ["bursty", "incident-evening"])
def test_learning_makes_the_default_cheaper(trace: str) -> None:
    """Without fleet.learning (the `previous` policy) the same code pays more on the same world."""
    tasks = sim_trace.load_trace(Path(__file__).parents[2] / "bench" / "traces" / f"{trace}.csv")
    params = engine.SimParams(seed=0)
    new = engine.simulate(tasks, make_policy("default"), engine.sim_scaling(), params).figures
    old = engine.simulate(tasks, make_policy("previous"), engine.sim_scaling(), params).figures
    assert float(new["billed_per_busy"]) < float(old["billed_per_busy"]) - 0.1
    assert new["killed_within_2min_of_promotion"] == 0 and new["spawns_beyond_demand"] == 0
