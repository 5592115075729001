"""`orchestrator demo` end to end, as a user runs it: its own Ray, Postgres and pods, then nothing left.

Runs the real command in a subprocess (so it starts its own Ray, not the session's) in a temporary
working directory, with a short trace at high speed. Every process it starts inherits a marker
variable, so the process table can be searched for leftovers precisely even with other test
sessions on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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
def workdir() -> Iterator[Path]:
    """Not under pytest's tmp tree: that one is 0700 and root's, and the embedded Postgres runs as
    the user `pgserver` when we are root, so it could not be stopped there."""
    path = Path(tempfile.mkdtemp(prefix="orchestrator-demo-test-"))
    (path / "tiny.csv").write_text(TRACE)
    try:
        yield path
    finally:
        from store.embedded import stop_embedded

        stop_embedded(path / ".orchestrator" / "pgdata")
        stop_embedded(path / ".orchestrator" / "reigh" / "pgdata")
        shutil.rmtree(path, ignore_errors=True)


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
    assert "Ray dashboard: http" in output, output[-3000:]
    if "RAY_AUTH_MODE" not in env:  # Ray's token auth is on by default: the demo says how to sign in
        assert "ray get-auth-token" in output, output[-3000:]
    assert (workdir / ".orchestrator" / "pgdata" / "PG_VERSION").exists()

    left = _wait_for_no_leftovers(marker, workdir, before)
    assert not left, "processes left behind by the demo:\n" + "\n".join(left)

    # The database it left answers `explain` and `status`; the demo's end is a stop, not a silence.
    story = _run(workdir, env, "explain", "--since", "1h")
    assert story.returncode == 0, story.stderr
    assert "SILENT" not in story.stdout, story.stdout[-3000:]
    assert "(demo ended); not started again since" in story.stdout, story.stdout[-3000:]
    timeline = _run(workdir, env, "explain", "--since", "1h", "--json")
    assert timeline.returncode == 0, timeline.stderr
    assert [s["reason"] for s in json.loads(timeline.stdout)["stops"]] == ["demo ended"]
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


def test_demo_in_the_reigh_profile_on_a_reigh_shaped_database(workdir: Path) -> None:
    """`orchestrator demo --profile reigh`: the app's tables from the fixture, the trace's tasks put
    in the way the app does, pods running the Headless-Wan2GP stand-in; then status and explain."""
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "DATABASE_URL", "SUPABASE_"))}
    env["DEMO_TEST_MARKER"] = marker
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    demo = _run(
        workdir,
        env,
        "demo",
        "--profile",
        "reigh",
        "--trace",
        "tiny.csv",
        "--speed",
        "40",
        "--duration",
        "20",
        "--plain",
        timeout=240,
    )
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output[-3000:]
    assert "tasks:        6/6 done, 0 failed, 0 unfinished" in output, output[-3000:]
    assert "Reigh-shaped app database" in output and "Traceback" not in output, output[-3000:]
    assert "ORCHESTRATOR_QUEUE__PROFILE=reigh" in output, output[-3000:]
    pgdata = workdir / ".orchestrator" / "reigh" / "pgdata"
    assert (pgdata / "PG_VERSION").exists()
    left = _wait_for_no_leftovers(marker, workdir, before)
    assert not left, "processes left behind by the demo:\n" + "\n".join(left)

    env |= {"ORCHESTRATOR_QUEUE__PROFILE": "reigh", "ORCHESTRATOR_DATABASE__EMBEDDED_DIR": str(pgdata)}
    timeline = _run(workdir, env, "explain", "--since", "1h", "--json")
    assert timeline.returncode == 0, timeline.stderr
    entries = json.loads(timeline.stdout)["entries"]
    worker_ids = sorted({e["transition"]["worker_id"] for e in entries if e["kind"] == "transition"})
    assert worker_ids, "the demo recorded no worker transitions"
    life = _run(workdir, env, "explain", "--worker", worker_ids[0])
    assert life.returncode == 0 and f"Worker {worker_ids[0]}: terminated" in life.stdout, life.stdout + life.stderr
    status = _run(workdir, env, "status")
    assert status.returncode == 0, status.stdout + status.stderr
