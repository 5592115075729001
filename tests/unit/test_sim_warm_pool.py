"""The simulator's warm pool (`sim.engine`): parks, resumes and retires are carried out and billed
as the design says (GPU per stint, a stopped pod's disk at `stopped_cost_share`), refused resumes
are not spawn failures, and runs stay deterministic; without a warm pool nothing changed."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from config.settings import ScalingSettings
from fleet import policy as default_policy
from fleet.models import BreakerStatus, Decision, SpawnOutcomeKind, WorkerState, WorkerView
from fleet.policy import PolicyContext
from sim import engine, waste
from sim.baselines import RunsAsTheScaler, make_policy
from sim.trace import TraceTask, load_trace

# A world where every time is fixed and nothing fails, to check the billing by hand.
FIXED = engine.SimParams(
    boot="fixed:100",
    resume="fixed:30",
    spawn_error_rate=0.0,
    no_heartbeat_rate=0.0,
    resume_error_rate=0.0,
    stop_delay_s=5.0,
    terminate_delay_s=5.0,
    stopped_cost_share=0.02,
    tail_s=100.0,
)


def _task(index: int, at: float, duration: float) -> TraceTask:
    return TraceTask(index=index, arrival_s=at, task_type="seg", user_id=f"u{index}", duration_s=duration)


@dataclass
class ParkingPolicy:
    """Test-only: parks every idle worker beyond demand at once, resumes stopped workers (newest
    first) before spawning, and retires those stopped longer than `retire_after_s`. It records the
    stopped workers it was shown and the spawn outcomes it was given."""

    name: str = "parking"
    extra_resumes: int = 0  # resume this many beyond demand whenever demand asks for a worker
    retire_after_s: float | None = None
    stopped_seen: list[tuple[float, WorkerView]] = field(default_factory=list)
    outcomes: set[SpawnOutcomeKind] = field(default_factory=set)

    def cycle_interval_s(self, config: ScalingSettings) -> float:
        return 10.0

    def wake_debounce_s(self, config: ScalingSettings) -> float | None:
        return None

    def decide(self, ctx: PolicyContext) -> Decision:
        self.outcomes.update(o.kind for o in ctx.history.outcomes)
        capacity = sum(1 for w in ctx.workers if w.state.counts_as_capacity())
        demand = ctx.snapshot.claimable + ctx.snapshot.in_progress
        stopped = sorted(
            (w for w in ctx.workers if w.state is WorkerState.STOPPED), key=lambda w: (-(w.state_since or 0.0), w.id)
        )
        self.stopped_seen.extend((ctx.now, w) for w in stopped)
        need = max(0, demand - capacity)
        resume = [w.id for w in stopped[: need + self.extra_resumes]] if need else []
        idle = [w.id for w in ctx.workers if w.state is WorkerState.ACTIVE and w.tasks_in_progress == 0]
        park = idle[: max(0, capacity - demand)]
        keep_s = self.retire_after_s
        retire = [
            w.id
            for w in stopped
            if w.id not in resume and keep_s is not None and ctx.now - (w.state_since or 0.0) >= keep_s
        ]
        return Decision(
            spawn=max(0, need - len(resume)),
            drain=tuple(park),
            park=tuple(park),
            resume=tuple(resume),
            retire=tuple(retire),
            reasons=("parking",),
            breaker=ctx.history.breaker,
            desired=demand,
            capacity=capacity,
            history=ctx.history,
        )


def test_a_park_then_a_resume_is_billed_per_stint_and_the_disk_while_stopped() -> None:
    # One task at 0 (50 s) and one at 1000 (50 s). The pod boots 0-100, runs 100-150, is parked at
    # 150 and stopped at 155; resumed at 1000, up at 1030, runs 1030-1080, parked at 1080, stopped at
    # 1085; the run ends at 1080 + tail 100 = 1180 with the pod still stopped.
    pol = ParkingPolicy()
    result = engine.simulate([_task(0, 0.0, 50.0), _task(1, 1000.0, 50.0)], pol, engine.sim_scaling(), FIXED)
    f = result.figures
    gpu = (155.0 - 0.0) + (1085.0 - 1000.0)
    stopped = (1000.0 - 155.0) + (1180.0 - 1085.0)
    assert f["sim_end_s"] == 1180.0
    assert f["stopped_billed_gpu_s"] == pytest.approx(0.02 * stopped)
    assert f["billed_gpu_s"] == pytest.approx(gpu + 0.02 * stopped)
    assert (f["spawns"], f["parks"], f["resumes"], f["resume_failures"], f["terminations"]) == (1, 2, 1, 0, 0)
    assert f["busy_gpu_s"] == 100.0 and f["wait_p50_s"] == pytest.approx((100.0 + 30.0) / 2)
    # Both parks came 50 s after a promotion (the second after the resume's): killed young twice.
    assert f["killed_within_2min_of_promotion"] == 2
    assert f["spawns_beyond_demand"] == 0 and f["peak_workers"] == 1
    # The policy saw the stopped worker, with when it stopped.
    assert {w.state_since for _, w in pol.stopped_seen} == {155.0, 1085.0}
    [pod] = result.pods
    assert [(s.start, s.promoted_at, s.scaled_down_at, s.end, s.resumed) for s in pod.stints] == [
        (0.0, 100.0, 150.0, 155.0, False),
        (1000.0, 1030.0, 1080.0, 1085.0, True),
    ]
    parts = waste.billed_breakdown(result, gap_s=100.0)
    assert (parts["boot_used"], parts["resume_used"], parts["busy"]) == (100.0, 30.0, 100.0)
    assert parts["stopped"] == pytest.approx(0.02 * stopped)
    assert sum(parts.values()) == pytest.approx(f["billed_gpu_s"])


def test_a_retired_stopped_pod_pays_its_disk_until_it_is_gone() -> None:
    # Parked at 150, stopped at 155; retired at the first cycle 100 s later (260), gone at 265.
    pol = ParkingPolicy(retire_after_s=100.0)
    result = engine.simulate([_task(0, 0.0, 50.0)], pol, engine.sim_scaling(), replace(FIXED, tail_s=300.0))
    f = result.figures
    assert (f["parks"], f["terminations"], f["resumes"]) == (1, 1, 0)
    assert f["billed_gpu_s"] == pytest.approx(155.0 + 0.02 * (265.0 - 155.0))


def test_a_resume_beyond_demand_counts_as_a_spawn_beyond_demand() -> None:
    # Two pods parked after their tasks; one task comes back and both are resumed.
    trace = [_task(0, 0.0, 50.0), _task(1, 0.0, 50.0), _task(2, 1000.0, 50.0)]
    result = engine.simulate(trace, ParkingPolicy(extra_resumes=1), engine.sim_scaling(), FIXED)
    f = result.figures
    assert (f["spawns"], f["resumes"], f["spawns_beyond_demand"]) == (2, 2, 1)


def test_a_refused_resume_ends_in_a_terminated_worker_and_a_new_spawn_never_a_spawn_failure() -> None:
    # The resume at 1000 is refused at 1002 (error, terminating, gone at 1007); the next cycle
    # (1010) spawns a new pod, up at 1110, its task 1110-1160, parked at 1160; the run ends at 1260.
    pol = ParkingPolicy()
    params = replace(FIXED, resume_error_rate=1.0)
    result = engine.simulate([_task(0, 0.0, 50.0), _task(1, 1000.0, 50.0)], pol, engine.sim_scaling(), params)
    f = result.figures
    assert (f["spawns"], f["resumes"], f["resume_failures"], f["failed_spawns"], f["terminations"]) == (2, 1, 1, 0, 1)
    assert pol.outcomes == {SpawnOutcomeKind.BOOTED}  # the refusal is no spawn outcome
    first, second = result.pods
    assert (first.gone_at, [(s.start, s.end) for s in first.stints]) == (1007.0, [(0.0, 155.0), (1000.0, 1002.0)])
    assert [(s.start, s.promoted_at, s.end) for s in second.stints] == [(1010.0, 1110.0, 1165.0)]
    # The refused resume bills its GPU until the refusal; the pod is stopped again until gone.
    gpu = 155.0 + 2.0 + 155.0
    stopped = (1000.0 - 155.0) + (1007.0 - 1002.0) + (1260.0 - 1165.0)
    assert f["billed_gpu_s"] == pytest.approx(gpu + 0.02 * stopped)
    parts = waste.billed_breakdown(result, gap_s=100.0)
    assert parts["resume_unused"] == 2.0 and sum(parts.values()) == pytest.approx(f["billed_gpu_s"])


@dataclass
class _BreakerWatch(RunsAsTheScaler):
    """The default policy, noting the breaker's status after every decision."""

    name: str = "default"
    statuses: set[BreakerStatus] = field(default_factory=set)

    def decide(self, ctx: PolicyContext) -> Decision:
        decision = default_policy.decide(ctx)
        self.statuses.add(decision.breaker.status)
        return decision


TRACES = Path(__file__).parents[2] / "bench" / "traces"


def test_refused_resumes_never_open_the_breaker() -> None:
    # Every resume refused: the default policy with a warm pool keeps resuming and respawning.
    params = engine.SimParams(seed=2, spawn_error_rate=0.0, no_heartbeat_rate=0.0, resume_error_rate=1.0)
    watch = _BreakerWatch()
    result = engine.simulate(
        load_trace(TRACES / "incident-evening.csv"), watch, engine.sim_scaling({"warm_pool_size": 4}), params
    )
    f = result.figures
    assert f["resume_failures"] == f["resumes"] >= 5 and f["failed_spawns"] == 0
    assert watch.statuses == {BreakerStatus.CLOSED}
    assert f["tasks_done"] == f["tasks"]


def test_same_seed_same_figures_with_a_warm_pool() -> None:
    tasks = load_trace(TRACES / "incident-evening.csv")
    config = engine.sim_scaling({"warm_pool_size": 4})
    runs = [engine.simulate(tasks, make_policy("default"), config, engine.SimParams(seed=4)) for _ in range(2)]
    assert runs[0].figures == runs[1].figures and runs[0].pods == runs[1].pods and runs[0].waits == runs[1].waits
    assert runs[0].figures["resumes"] > 0 and runs[0].figures["parks"] > 0


def test_resume_draws_are_their_own_and_leave_the_spawn_draws_alone() -> None:
    a, b = engine.SimParams(seed=3), engine.SimParams(seed=3, resume="fixed:5", resume_error_rate=0.9)
    spawns_a, spawns_b = a.spawn_draws(), b.spawn_draws()
    assert [next(spawns_a) for _ in range(20)] == [next(spawns_b) for _ in range(20)]
    resumes, again = a.resume_draws(), a.resume_draws()
    drawn = [next(resumes) for _ in range(50)]
    assert drawn == [next(again) for _ in range(50)]
    assert all(20.0 <= s <= 60.0 for s, _ in drawn) and 0 < sum(refused for _, refused in drawn) < 50
    with pytest.raises(ValueError, match="resume distribution"):
        engine.SimParams(resume="fixed:x").resume_sampler()


# The default policy on the bursty trace, seed 0, recorded before the warm pool reached the
# simulator (sim/engine.py at c8b1fda). Without a warm pool the world's new parts must change
# nothing; a change to the default policy itself may legitimately need these re-recorded.
BEFORE_WARM_POOL = {
    "tasks": 175,
    "tasks_done": 175,
    "billed_gpu_s": 56630.0,
    "busy_gpu_s": 33023.1,
    "billed_per_busy": 1.715,
    "wait_p50_s": 132.3,
    "wait_p95_s": 366.7,
    "wait_p99_s": 426.9,
    "spawns": 99,
    "failed_spawns": 5,
    "terminations": 99,
    "peak_workers": 11,
    "killed_within_2min_of_promotion": 0,
    "spawns_beyond_demand": 0,
    "sim_end_s": 22956.4,
}


def test_without_a_warm_pool_the_figures_are_unchanged() -> None:
    tasks = load_trace(TRACES / "bursty.csv")
    # pinned before the Scaler's wake-up on new tasks was simulated too: its timer alone
    params = engine.SimParams(seed=0, new_task_seen_s=None)
    result = engine.simulate(tasks, make_policy("default"), engine.sim_scaling({"warm_pool_size": 0}), params)
    f = result.figures
    assert {k: f[k] for k in BEFORE_WARM_POOL} == BEFORE_WARM_POOL
    assert (f["parks"], f["resumes"], f["resume_failures"], f["stopped_billed_gpu_s"]) == (0, 0, 0, 0.0)
