"""`orchestrator demo` end to end, as a user runs it: its own Ray, Postgres and pods, then nothing left.

Runs the real command in a subprocess (so it starts its own Ray, not the session's) in a temporary
working directory, with a short trace at high speed. Every process it starts inherits a marker
variable, so the process table can be searched for leftovers precisely even with other test
sessions on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")
TRACE = """arrival_s,task_type,user_id,duration_s,depends_on
0,travel_orchestrator,u1,30,
1,travel_segment,u1,60,0
2,travel_segment,u2,90,
5,travel_segment,u3,60,
20,travel_segment,u2,60,
40,travel_segment,u4,30,
"""


def _leftovers(marker: str, workdir: Path, before: set[int]) -> list[str]:
    """Processes the demo started that still run: our new children, or anything carrying its marker
    or naming its working directory."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True) if p.pid not in before}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(workdir) in " ".join(proc.info["cmdline"] or []) or proc.environ().get("DEMO_TEST_MARKER") == marker:
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    out = []
    for proc in found.values():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{proc.pid} {' '.join(proc.cmdline())[:160]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _wait_for_no_leftovers(marker: str, workdir: Path, before: set[int], timeout_s: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = _leftovers(marker, workdir, before)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "tiny.csv").write_text(TRACE)
    try:
        yield tmp_path
    finally:
        from store.embedded import stop_embedded

        stop_embedded(tmp_path / ".orchestrator" / "pgdata")


def _run(workdir: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORCHESTRATOR, *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_demo_runs_the_workload_and_leaves_only_its_database(workdir: Path) -> None:
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "DATABASE_URL", "SUPABASE_"))}
    env["DEMO_TEST_MARKER"] = marker
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    demo = _run(
        workdir, env, "demo", "--trace", "tiny.csv", "--speed", "40", "--duration", "20", "--plain", timeout=240
    )
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output[-3000:]
    assert "tasks:        6/6 done, 0 failed, 0 unfinished" in output, output[-3000:]
    assert "Traceback" not in output
    # The fleet went back down on its own (the scaler drained its idle workers), not by the demo's cleanup.
    assert "still up at the end" not in output, output[-3000:]
    assert "drained by the scaler when idle" in output and " 0 drained by the scaler" not in output, output[-3000:]
    assert "explain --worker gpu-" in output, output[-3000:]
    assert (workdir / ".orchestrator" / "pgdata" / "PG_VERSION").exists()

    left = _wait_for_no_leftovers(marker, workdir, before)
    assert not left, "processes left behind by the demo:\n" + "\n".join(left)

    # The database it left answers `explain` and `status`.
    timeline = _run(workdir, env, "explain", "--since", "1h", "--json")
    assert timeline.returncode == 0, timeline.stderr
    entries = json.loads(timeline.stdout)["entries"]
    worker_ids = sorted({e["transition"]["worker_id"] for e in entries if e["kind"] == "transition"})
    assert worker_ids, "the demo recorded no worker transitions"
    life = _run(workdir, env, "explain", "--worker", worker_ids[0])
    assert life.returncode == 0, life.stderr
    assert f"Worker {worker_ids[0]}: terminated" in life.stdout
    assert "Transitions:" in life.stdout and "created" in life.stdout

    status = _run(workdir, env, "status")
    assert status.returncode == 0, status.stdout + status.stderr

    left = _wait_for_no_leftovers(marker, workdir, before)
    assert not left, "processes left behind by explain/status:\n" + "\n".join(left)


def _pods(marker: str) -> list[int]:
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if "-m worker" in cmd and proc.environ().get("DEMO_TEST_MARKER") == marker:
                out.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def test_ctrl_c_mid_run_stops_everything(workdir: Path) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group (the demo, and any
    child that shares its group); the demo must still stop Ray, the pods and Postgres, print no
    traceback and exit 130."""
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "DATABASE_URL", "SUPABASE_"))}
    env["DEMO_TEST_MARKER"] = marker
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    log = workdir / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [ORCHESTRATOR, "demo", "--trace", "tiny.csv", "--speed", "2", "--duration", "60", "--plain"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a shell job
        )
        try:
            deadline = time.monotonic() + 120
            while not _pods(marker):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no pod started:\n" + log.read_text()[-3000:]
                time.sleep(0.5)
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGINT)
            code = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = log.read_text()
    assert code == 130, output[-3000:]
    assert "interrupted: stopping everything" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "failed:" not in output, output[-3000:]
    left = _wait_for_no_leftovers(marker, workdir, before)
    assert not left, "processes left behind after Ctrl-C:\n" + "\n".join(left)


# ---- pure pieces (no Ray, no Postgres): fast


def test_policy_time_knobs_are_compressed_like_the_trace(tmp_path: Path) -> None:
    from config.settings import ScalingSettings
    from orchestrator.demo.compression import demo_overrides

    prod = ScalingSettings()
    slow = demo_overrides(tmp_path, 30.0)["scaling"]
    fast = demo_overrides(tmp_path, 240.0)["scaling"]
    assert slow["idle_timeout_s"] == prod.idle_timeout_s / 30
    assert slow["scale_down_stabilization_s"] == prod.scale_down_stabilization_s / 30
    assert slow["failure_window_s"] == prod.failure_window_s / 30
    # Never below a few Scaler cycles, however fast the replay.
    assert fast["idle_timeout_s"] >= 3 * fast["cycle_interval_s"]
    assert fast["scale_down_stabilization_s"] >= 2 * fast["cycle_interval_s"]


def test_default_trace_has_quiet_gaps_long_enough_to_scale_down() -> None:
    """Compressed into the default two minutes, the default trace's quiet gaps outlast two boots
    (boot ~8 s, then one boot time kept idle), so the fleet visibly goes back to zero in between."""
    from orchestrator.demo.compression import DEFAULT_TRACE, fit_speed
    from sim.trace import load_trace

    rows = load_trace(DEFAULT_TRACE)
    speed = fit_speed(rows, 120.0)
    busy_until = 0.0
    gaps = []
    for r in sorted(rows, key=lambda r: r.arrival_s):
        start = r.arrival_s / speed
        if busy_until and start - busy_until > 0:
            gaps.append(start - busy_until)
        busy_until = max(busy_until, start + r.duration_s / speed)
    assert sum(1 for g in gaps if g >= 16) >= 2, gaps


def test_live_view_keeps_the_decision_readable_at_120_columns() -> None:
    from rich.console import Console

    from orchestrator import live_view

    reason = (
        "no scale-down yet: surplus 4 but 4 idle worker(s) idle at most 1s; keep idle >= 8s = "
        "max(idle_timeout 8s, boot estimate 8s) while work keeps arriving"
    )
    snap = live_view.Snapshot(
        elapsed_s=42,
        speed=30,
        trace_name="demo.csv",
        submitted=6,
        total=14,
        queued=0,
        running=2,
        done=4,
        failed=0,
        workers=[live_view.WorkerLine("gpu-20261128_093615-26e134b9", "active", 17, 0, in_state_s=10, idle_s=2)],
        last_decision_at="09:36:30",
        last_decision=reason,
        last_decision_age_s=1,
        fleet_history=(0, 2, 4, 4, 2, 0),
        max_workers=4,
        shipper={"healthy": True, "shipped": 52, "pending": 1},
        dashboard_url="http://127.0.0.1:8265",
    )
    console = Console(width=120, record=True, color_system=None)
    console.print(live_view.render(snap))
    text = console.export_text()
    for clause in live_view.decision_clauses(reason):
        assert clause in text, text
    assert "gpu-20261128_093615-26e134b9" in text and "healthy; shipped 52" in text
    assert "http://127.0.0.1:8265" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text
    assert live_view.sparkline(snap.fleet_history, 4) == "_▄██▄_"
    assert "at most 1s" in live_view.plain_line(snap) and "boot estimate" not in live_view.plain_line(snap)
