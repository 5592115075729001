"""Where a simulated run's billed time goes (`sim.waste`): the parts add up to what was billed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import engine, waste
from sim.baselines import POLICY_NAMES, make_policy
from sim.results import GpuStint, PodLife
from sim.trace import TraceTask


def test_a_pod_is_split_into_boot_work_gaps_tail_and_release() -> None:
    pod = PodLife(
        "p",
        created_at=0.0,
        promoted_at=100.0,
        scaled_down_at=900.0,
        gone_at=905.0,
        runs=((110.0, 200.0), (150.0, 250.0), (300.0, 400.0), (700.0, 800.0)),
    )
    parts = waste.pod_breakdown(pod, gap_s=120.0)
    assert parts == {
        "busy": 140.0 + 100.0 + 100.0,  # 110-250 (two overlapping runs), 300-400, 700-800
        "boot_used": 100.0,
        "boot_unused": 0.0,
        "idle_unused": 0.0,
        "idle_before_first": 10.0,
        "idle_gap_short": 50.0,
        "idle_gap_long": 300.0,
        "idle_after_last": 100.0,
        "release": 5.0,
        "resume_used": 0.0,
        "resume_unused": 0.0,
        "stopped": 0.0,
    }
    never_up = PodLife("q", 0.0, None, None, 20.0, ())
    assert waste.pod_breakdown(never_up, 120.0)["boot_unused"] == 20.0
    unused = PodLife("r", 0.0, 60.0, 300.0, 305.0, ())
    parts = waste.pod_breakdown(unused, 120.0)
    assert (parts["boot_unused"], parts["idle_unused"]) == (60.0, 245.0)


def test_a_parked_pod_is_split_per_stint_with_its_disk_while_stopped() -> None:
    # Spawned at 0, up at 100, one task 100-300, parked at 400, stopped at 405; resumed at 1405, up
    # at 1435, one task 1440-1500; resumed again at 3000 after a stop at 1600+5, refused at 3002; gone at 3007.
    stints = (
        GpuStint(0.0, 100.0, 400.0, 405.0, resumed=False),
        GpuStint(1405.0, 1435.0, 1600.0, 1605.0, resumed=True),
        GpuStint(3000.0, None, None, 3002.0, resumed=True),
    )
    pod = PodLife("p", 0.0, 100.0, 400.0, 3007.0, ((100.0, 300.0), (1440.0, 1500.0)), stints, 0.02)
    parts = waste.pod_breakdown(pod, gap_s=120.0)
    stopped_s = (1405.0 - 405.0) + (3000.0 - 1605.0) + (3007.0 - 3002.0)
    assert parts == pytest.approx(
        {
            "busy": 200.0 + 60.0,
            "boot_used": 100.0,
            "boot_unused": 0.0,
            "idle_unused": 0.0,
            "idle_before_first": 0.0 + 5.0,
            "idle_gap_short": 0.0,
            "idle_gap_long": 0.0,
            "idle_after_last": 100.0 + 100.0,
            "release": 5.0 + 5.0,
            "resume_used": 30.0,
            "resume_unused": 2.0,
            "stopped": 0.02 * stopped_s,
        }
    )
    assert sum(parts.values()) == pytest.approx(pod.billed_gpu_s)
    assert pod.gpu_s == pytest.approx(405.0 + 200.0 + 2.0)


@st.composite
def traces(draw: st.DrawFn) -> list[TraceTask]:
    n = draw(st.integers(1, 12))
    arrivals = sorted(draw(st.lists(st.floats(0, 3000), min_size=n, max_size=n)))
    return [
        TraceTask(
            index=i,
            arrival_s=round(at, 1),
            task_type=draw(st.sampled_from(["seg", "orch"])),
            user_id=f"u{draw(st.integers(0, 2))}",
            duration_s=round(draw(st.floats(5, 600)), 1),
            depends_on=None,
        )
        for i, at in enumerate(arrivals)
    ]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    traces(),
    st.sampled_from(POLICY_NAMES),
    st.integers(0, 5),
    st.sampled_from([1, 2]),
    st.floats(30, 300),
    st.sampled_from([0, 2]),
)
def test_the_parts_add_up_to_the_billed_time(
    trace: list[TraceTask], name: str, seed: int, tasks_per_worker: int, gap_s: float, warm_pool_size: int
) -> None:
    # With a warm pool the default policy parks and resumes (some resumes refused): stopped disk
    # time and resumed stints must add up too.
    config = engine.sim_scaling({"tasks_per_worker": tasks_per_worker, "warm_pool_size": warm_pool_size})
    params = engine.SimParams(
        seed=seed, spawn_error_rate=0.2, no_heartbeat_rate=0.1, tail_s=300.0, resume_error_rate=0.3
    )
    result = engine.simulate(trace, make_policy(name), config, params)
    parts = waste.billed_breakdown(result, gap_s)
    assert all(seconds >= -1e-6 for seconds in parts.values()), parts
    assert sum(parts.values()) == pytest.approx(result.figures["billed_gpu_s"], abs=0.1 * (len(result.pods) + 1))
    if tasks_per_worker == 1:  # a pod holds one task at a time: its busy time is the tasks' time
        assert parts["busy"] == pytest.approx(result.figures["busy_gpu_s"], abs=0.1)
