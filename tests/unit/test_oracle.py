"""The clairvoyant references (`sim.oracle`): hand-made traces with a known optimum, and the bound
holding against every policy on random traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from orchestrator.cli import app
from sim import compare, engine, oracle
from sim.baselines import POLICY_NAMES, make_policy
from sim.trace import TraceTask

# A world with nothing random in it: every pod boots in 50 s, none fails, a release costs 5 s.
EXACT = engine.SimParams(boot="fixed:50", spawn_error_rate=0.0, no_heartbeat_rate=0.0, terminate_delay_s=5.0)
START = 50.0 + 5.0


def _tasks(*rows: tuple[float, str, float] | tuple[float, str, float, int]) -> list[TraceTask]:
    out = []
    for i, row in enumerate(rows):
        arrival, user, duration = row[0], row[1], row[2]
        dep = row[3] if len(row) == 4 else None
        out.append(TraceTask(i, arrival, "t", user, duration, dep))
    return out


@pytest.mark.parametrize(
    ("tasks", "overrides", "billed", "starts"),
    [
        # one task: its run plus one pod start
        (_tasks((0, "a", 100)), {}, 100 + START, 1),
        # a gap of 200 s is dearer idle than a new pod: two starts
        (_tasks((0, "a", 100), (300, "a", 100)), {}, 200 + 2 * START, 2),
        # a gap of 30 s is cheaper idle: one start, the gap paid
        (_tasks((0, "a", 100), (130, "a", 100)), {}, 200 + 30 + START, 1),
        # overlap: two layers (busy 150 and 50), two starts
        (_tasks((0, "a", 100), (50, "b", 100)), {}, 200 + 2 * START, 2),
        # the same overlap with two tasks per pod: one layer
        (_tasks((0, "a", 100), (50, "b", 100)), {"tasks_per_worker": 2}, 150 + START, 1),
        # per-user limit 1: the second task waits for the first, one pod serves both back to back
        (_tasks((0, "a", 100), (0, "a", 100)), {"per_user_concurrency_limit": 1}, 200 + START, 1),
        # max_workers 1: the same with two users
        (_tasks((0, "a", 100), (0, "b", 100)), {"max_workers": 1}, 200 + START, 1),
        # a child starts when its parent ends: one pod, no gap
        (_tasks((0, "a", 30), (0.1, "a", 200, 0)), {}, 230 + START, 1),
    ],
)
def test_known_optimum(tasks: list[TraceTask], overrides: dict[str, int], billed: float, starts: int) -> None:
    config = engine.sim_scaling(overrides)
    for drawn in (False, True):  # fixed boots: the bound and the clairvoyant plan agree
        figures = oracle.zero_wait_bound(tasks, config, EXACT, drawn=drawn)
        assert figures["billed_gpu_s"] == pytest.approx(billed)
        assert figures["pod_starts"] == starts


def test_the_warm_plan_parks_a_gap_when_a_resume_is_cheaper_than_idling_or_a_new_pod() -> None:
    warm = engine.SimParams(
        boot="fixed:50",
        spawn_error_rate=0.0,
        no_heartbeat_rate=0.0,
        terminate_delay_s=5.0,
        resume="fixed:10",
        resume_error_rate=0.0,
        stop_delay_s=5.0,
        stopped_cost_share=0.01,
    )
    config = engine.sim_scaling()
    tasks = _tasks((0, "a", 100), (300, "a", 100))
    runs = oracle.earliest_schedule(tasks, config).runs
    # the gap of 200 s: idle 200, a new pod 55, parked 5 + 0.01 * 200 + 10 = 17
    assert oracle.warm_layered(runs, config, warm).billed_s == pytest.approx(200 + START + 17)
    # a gap of 10 s stays idle; with resumes refused it is bridged by a new pod like `oracle`
    assert oracle.warm_layered(
        oracle.earliest_schedule(_tasks((0, "a", 100), (110, "a", 100)), config).runs, config, warm
    ).billed_s == pytest.approx(210 + START)
    refused = engine.SimParams(**{**warm.__dict__, "resume_error_rate": 1.0})
    assert oracle.warm_layered(runs, config, refused).billed_s == pytest.approx(
        oracle.layered_bound(runs, config, refused, drawn=True).billed_s
    )


def test_least_wait_schedule_follows_the_limits() -> None:
    tasks = _tasks((0, "a", 100), (0, "a", 100), (10, "b", 50))
    sched = oracle.earliest_schedule(tasks, engine.sim_scaling({"per_user_concurrency_limit": 1}))
    assert sched.runs == ((0, 100), (100, 200), (10, 60))
    assert sched.waits == (0, 100, 0)


def test_hold_trades_wait_for_pods() -> None:
    tasks = _tasks((0, "a", 100), (60, "b", 100))
    config = engine.sim_scaling()
    assert oracle.schedule(tasks, config).waits == (0, 0)
    held = oracle.schedule(tasks, config, hold_s=50)
    assert held.runs == ((0, 100), (100, 200)) and held.waits == (0, 40)
    plan = oracle.clairvoyant_plan(tasks, config, EXACT, wait_p95_s=40)
    assert plan["billed_gpu_s"] == pytest.approx(200 + START) and plan["wait_p95_s"] <= 40


def test_failed_spawns_cost_their_cancel_and_are_counted() -> None:
    params = engine.SimParams(seed=5, spawn_error_rate=0.4, no_heartbeat_rate=0.2, boot="fixed:50")
    config = engine.sim_scaling()
    draws = params.spawn_draws()
    faults_before_first_good = 0
    for _, fault in draws:
        if fault is None:
            break
        faults_before_first_good += 1
    cost, failed = oracle.start_costs(params, config, 1, drawn=False)
    assert failed[1] == faults_before_first_good
    assert cost[1] == pytest.approx(50 + 5 + 5 * faults_before_first_good)


def test_the_engine_and_the_oracle_draw_the_same_pods() -> None:
    params = engine.SimParams(seed=11, spawn_error_rate=0.3, no_heartbeat_rate=0.3)
    tasks = _tasks(*[(i * 400.0, f"u{i}", 100.0) for i in range(6)])
    result = engine.simulate(tasks, make_policy("default"), engine.sim_scaling(), params)
    draws = params.spawn_draws()
    expected_failures = sum(1 for _ in range(int(result.figures["spawns"])) if next(draws)[1] is not None)
    assert result.figures["failed_spawns"] == expected_failures


def test_compare_reports_the_gap_closed() -> None:
    tasks = _tasks((0, "a", 100), (500, "b", 120), (520, "c", 80), (2000, "a", 60))
    table = compare.compare(tasks, engine.sim_scaling(), EXACT, ["keda", "oracle", "oracle-p95", "bound"])
    assert table[compare.ANCHOR]["gap_closed"] == 0.0
    assert table["oracle"]["gap_closed"] == 1.0 and table["oracle-p95"]["gap_closed_p95"] == 1.0
    assert "gap_closed" in table["keda"]
    # the plan at the anchor's p95 is never dearer than the zero-wait plan (it may wait, need not)
    assert table["oracle-p95"]["billed_gpu_s"] <= table["oracle"]["billed_gpu_s"]
    assert table["bound"]["billed_gpu_s"] <= table["oracle"]["billed_gpu_s"]


# ---- the bound against every policy on random traces


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[TraceTask], dict[str, int], engine.SimParams, str]:
    n = draw(st.integers(1, 10))
    rows = []
    for i in range(n):
        arrival = draw(st.floats(0, 3000, allow_nan=False).map(lambda x: round(x, 1)))
        duration = draw(st.floats(5, 500, allow_nan=False).map(lambda x: round(x, 1)))
        user = draw(st.sampled_from(["a", "b", "c", f"u{i}"]))
        rows.append((arrival, user, duration))
    rows.sort(key=lambda r: r[0])
    tasks = [TraceTask(i, a, "t", u, d, None) for i, (a, u, d) in enumerate(rows)]
    overrides = {
        "min_workers": draw(st.integers(0, 3)),  # always-on pods make zero waits happen
        "max_workers": draw(st.integers(3, 6)),
        "per_user_concurrency_limit": draw(st.integers(1, 3)),
    }
    boot = draw(st.sampled_from(["fixed:40", "uniform:56:157", "uniform:20:60"]))
    params = engine.SimParams(
        seed=draw(st.integers(0, 1000)),
        boot=boot,
        spawn_error_rate=draw(st.sampled_from([0.0, 0.1, 0.3])),
        no_heartbeat_rate=draw(st.sampled_from([0.0, 0.1, 0.3])),
        tail_s=draw(st.sampled_from([3.0, 900.0])),
    )
    return tasks, overrides, params, draw(st.sampled_from(POLICY_NAMES))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_no_policy_beats_the_bound(world: tuple[list[TraceTask], dict[str, int], engine.SimParams, str]) -> None:
    tasks, overrides, params, name = world
    config = engine.sim_scaling(overrides)
    result = engine.simulate(tasks, make_policy(name), config, params)
    billed = float(result.figures["billed_gpu_s"])
    assert result.figures["tasks_done"] == len(tasks)
    # whatever its waits, no fleet pays less than the bound of the task runs it made
    own = oracle.layered_bound(result.runs, config, params)
    assert billed >= own.billed_s - 0.1, (name, billed, own)
    # at the least wait, no policy beats the zero-wait bound
    least = oracle.earliest_schedule(tasks, config)
    ran = sorted(result.runs)
    if ran == sorted(least.runs):
        zero = oracle.zero_wait_bound(tasks, config, params)
        assert billed >= float(zero["billed_gpu_s"]) - 0.1, (name, billed, zero)


def test_cli_prints_references_and_the_gap(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,task_type,user_id,duration_s\n0,t,a,100\n400,t,b,120\n420,t,c,80\n")
    res = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--policy", "oracle", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["policy"] == "oracle" and data["figures"]["wait_p95_s"] == 0
    assert set(data["comparison"]) == {"oracle", compare.ANCHOR, "oracle-p95", "oracle-warm", "bound"}
    assert data["comparison"][compare.ANCHOR]["gap_closed"] == 0.0
    res = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--policy", "keda"])
    assert res.exit_code == 0 and "gap closed" in res.output and "oracle-p95" in res.output
    res = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--policy", "bound", "--plot", "x.png"])
    assert res.exit_code == 2
