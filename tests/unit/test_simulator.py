"""The discrete-event simulator (`sim`): determinism, trace parsing, figures, layering, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from sim import engine
from sim import trace as sim_trace
from sim.baselines import make_policy

TRACE = """arrival_s,task_type,user_id,duration_s,depends_on
0,travel_orchestrator,u1,30,
0.1,travel_segment,u1,200,0
0.2,travel_segment,u1,150,0
300,travel_segment,u2,120,
310,travel_segment,u2,120,
320,travel_segment,u2,120,
330,travel_segment,u2,120,
1500,travel_segment,u3,90,
"""


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text(TRACE)
    return path


def test_same_seed_same_figures(trace_file: Path) -> None:
    tasks = sim_trace.load_trace(trace_file)
    params = engine.SimParams(seed=3, spawn_error_rate=0.2, no_heartbeat_rate=0.2)
    for name in ("default", "seed", "keda"):
        a = engine.simulate(tasks, make_policy(name), engine.sim_scaling(), params)
        b = engine.simulate(tasks, make_policy(name), engine.sim_scaling(), params)
        assert a.figures == b.figures and a.waits == b.waits


def test_all_tasks_finish_and_figures_add_up(trace_file: Path) -> None:
    r = engine.run(trace_file, "default", params=engine.SimParams(spawn_error_rate=0, no_heartbeat_rate=0))
    f = r.figures
    assert f["tasks_done"] == f["tasks"] == 8
    assert f["busy_gpu_s"] == pytest.approx(30 + 200 + 150 + 4 * 120 + 90)
    assert f["billed_gpu_s"] > f["busy_gpu_s"] and f["billed_per_busy"] > 1
    assert f["wait_p50_s"] <= f["wait_p95_s"] <= f["wait_p99_s"]
    assert f["spawns_beyond_demand"] == 0 and f["failed_spawns"] == 0
    # every pod is gone at the end, or parked in the warm pool (min_workers 0)
    assert f["terminations"] + f["stopped_at_end"] == f["spawns"]


def test_failures_are_counted_and_recovered(trace_file: Path) -> None:
    params = engine.SimParams(seed=1, spawn_error_rate=0.5, no_heartbeat_rate=0.0)
    r = engine.run(trace_file, "default", params=params)
    assert r.figures["failed_spawns"] > 0 and r.figures["tasks_done"] == 8


def test_per_user_limit_and_dependencies(tmp_path: Path) -> None:
    path = tmp_path / "deps.csv"
    rows = ["arrival_s,task_type,user_id,duration_s,depends_on", "0,a,u,100,"]
    rows += ["0,b,u,100,0"] * 5  # five children of row 0, one user with limit 3
    path.write_text("\n".join(rows) + "\n")
    params = engine.SimParams(boot="fixed:10", spawn_error_rate=0, no_heartbeat_rate=0)
    r = engine.run(path, "default", params=params)
    assert r.figures["tasks_done"] == 6
    assert max(row["in_progress"] for row in r.timeline) <= 3


def test_a_new_task_wakes_the_scaler_as_it_does_in_production(tmp_path: Path) -> None:
    """The Scaler waits for a new task (NOTIFY, or reigh's probe) and runs a cycle once it sees
    one, then waits a whole interval again; woken cycles keep `wake_debounce_s` apart. A policy
    with no wake-up (KEDA's poll) stays on its timer."""
    path = tmp_path / "wake.csv"
    rows = ["arrival_s,task_type,user_id,duration_s,depends_on"]
    rows += ["3.0,a,u1,30,", "3.1,a,u2,30,", "3.6,a,u3,30,", "40.0,a,u4,30,"]
    path.write_text("\n".join(rows) + "\n")
    params = engine.SimParams(boot="fixed:10", spawn_error_rate=0, no_heartbeat_rate=0, new_task_seen_s=0.25)
    config = engine.sim_scaling({"cycle_interval_s": 10.0, "wake_debounce_s": 1.0})
    cycles = [row["t"] for row in engine.run(path, "default", config=config, params=params).timeline]
    # 3.0 and 3.1 wake one cycle at 3.25; 3.6 is seen at 3.85 but waits for the debounce (4.25);
    # the timer restarts from there (14.25, 24.25, 34.25) until 40.0 wakes it at 40.25
    assert cycles[:7] == pytest.approx([0.0, 3.25, 4.25, 14.25, 24.25, 34.25, 40.25])
    keda = [row["t"] for row in engine.run(path, "keda", config=config, params=params).timeline]
    assert all(t % 30.0 == 0 for t in keda)


def test_cli_wakes_on_new_tasks_unless_told_not_to(trace_file: Path) -> None:
    runner = CliRunner()
    base = ["simulate", "--trace", str(trace_file), "--json"]
    woken, timer = (runner.invoke(app, base + extra) for extra in ([], ["--timer-only"]))
    assert woken.exit_code == timer.exit_code == 0, (woken.stdout, timer.stdout)
    assert json.loads(woken.stdout) != json.loads(timer.stdout)
    bad = runner.invoke(app, [*base, "--new-task-seen-s", "-1"])
    assert bad.exit_code == 2 and "--new-task-seen-s" in bad.output


def test_bad_traces_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,task_type,user_id,duration_s,depends_on\n0,a,u,10,\n5,a,u,ten,\n")
    with pytest.raises(ValueError, match=":3:"):
        sim_trace.load_trace(bad)
    bad.write_text("arrival_s,task_type,user_id,duration_s,depends_on\n0,a,u,10,4\n")
    with pytest.raises(ValueError, match="depends_on 4"):
        sim_trace.load_trace(bad)
    with pytest.raises(ValueError, match="boot distribution"):
        engine.SimParams(boot="gamma:1").boot_sampler()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("0,a,u,ten,", r"bad\.csv:2: duration_s: 'ten' is not a number"),
        ("-1,a,u,10,", r"bad\.csv:2: arrival_s: -1 is negative"),
        ("0,a,u,0,", r"bad\.csv:2: duration_s: 0 must be > 0"),
        ("0,a,u,nan,", r"bad\.csv:2: duration_s: 'nan' is not a finite number"),
        ("0,,u,10,", r"bad\.csv:2: task_type: empty"),
        ("0,a,u", r"bad\.csv:2: duration_s: missing"),
        ("0,a,u,10,,extra", r"bad\.csv:2: more fields than the header"),
        ("0,a,u,10,x", r"bad\.csv:2: depends_on: 'x' is not a row index"),
        ("0,a,u,10,0", r"bad\.csv:2: depends_on 0 is not an earlier row index"),
    ],
)
def test_trace_errors_name_file_line_and_field(tmp_path: Path, rows: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,task_type,user_id,duration_s,depends_on\n" + rows + "\n")
    with pytest.raises(sim_trace.TraceError, match=message):
        sim_trace.load_trace(bad)
    bad.write_text("arrival_s,task_type,duration_s\n0,a,10\n")
    with pytest.raises(sim_trace.TraceError, match=r"bad\.csv:1: missing column\(s\) user_id"):
        sim_trace.load_trace(bad)


def test_cli_json_and_plot(trace_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.png"
    res = CliRunner().invoke(
        app, ["simulate", "--trace", str(trace_file), "--policy", "keda", "--json", "--plot", str(out), "--seed", "2"]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["policy"] == "keda" and data["figures"]["tasks_done"] == 8
    assert out.stat().st_size > 1000
    res = CliRunner().invoke(app, ["simulate", "--trace", str(trace_file), "--policy", "nope"])
    assert res.exit_code != 0


def test_cli_takes_the_warm_pool_world(trace_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "warm.yaml"
    config.write_text("scaling:\n  warm_pool_size: 2\n")
    args = ["simulate", "--trace", str(trace_file), "--config", str(config), "--json"]
    res = CliRunner().invoke(app, [*args, "--resume", "fixed:30", "--resume-error-rate", "0"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout)["figures"]
    assert figures["resumes"] > 0 and figures["resume_failures"] == 0 and figures["tasks_done"] == 8
    res = CliRunner().invoke(app, [*args, "--resume-error-rate", "1"])
    refused = json.loads(res.stdout)["figures"]
    assert refused["resume_failures"] == refused["resumes"] > 0
    res = CliRunner().invoke(app, [*args, "--resume", "gamma:3"])
    assert res.exit_code == 2 and "resume distribution" in res.output


def test_shipped_traces_load() -> None:
    traces = sorted((Path(__file__).parents[2] / "bench" / "traces").glob("*.csv"))
    names = {p.stem for p in traces}
    assert {"steady", "bursty", "diurnal", "many-users", "incident-evening"} <= names
    for p in traces:
        assert sim_trace.load_trace(p)
