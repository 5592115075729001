"""The reference worker against a real Postgres (the `database_url` fixture), in-process and as
`python -m worker` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloud.local import PROJECT_ROOT
from fleet.models import WorkerState
from store.base import NewTask, Store, TaskRow, TaskStatus
from store.postgres import PostgresStore
from telemetry import tracing
from tests.support.polling import wait_for
from worker.handlers import TaskContext, demo_handler
from worker.runner import ExitCode, WorkerRunner, run_worker

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = PostgresStore(database_url, max_size=4)
    yield opened
    opened.close()


def active_worker(store: Store, worker_id: str) -> None:
    store.create_worker(worker_id, reason="test")
    assert store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "test: promoted")


def insert(store: Store, n: int, **params: object) -> list[str]:
    return store.insert_tasks(
        [NewTask(task_type="demo", user_id=f"user-{i % 7}", params=dict(params)) for i in range(n)]
    )


def start_worker_process(database_url: str, worker_id: str, log_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "OTEL_"))},
        "DATABASE_URL": database_url,
        "HEARTBEAT_INTERVAL_S": "0.2",
        "WORKER_POLL_INTERVAL_S": "0.1",
        "WORKER_LOG_FALLBACK_FILE": str(log_dir / f"{worker_id}.fallback.jsonl"),
        **env,
    }
    out = open(log_dir / f"{worker_id}.out", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "--worker-id", worker_id, "--handler", "worker.handlers:demo_handler"],
        cwd=PROJECT_ROOT,
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    return proc


def task_in_progress(store: Store, task_id: str) -> bool:
    task = store.get_task(task_id)
    return task is not None and task.status == TaskStatus.IN_PROGRESS


def test_two_workers_complete_twenty_tasks_exactly_once(store: Store, database_url: str) -> None:
    spans = InMemorySpanExporter()
    tracing._ensure_provider().add_span_processor(SimpleSpanProcessor(spans))
    ids = insert(store, 20, duration_s=0.02)
    runs: list[str] = []
    runs_lock = threading.Lock()

    def counting_handler(task: TaskRow, ctx: TaskContext) -> dict[str, object]:
        with runs_lock:
            runs.append(task.id)
        return demo_handler(task, ctx)

    runners: dict[str, WorkerRunner] = {}
    codes: dict[str, ExitCode] = {}
    stores = []

    def run(worker_id: str) -> None:
        own = PostgresStore(database_url, max_size=2)  # each worker has its own connections
        stores.append(own)
        codes[worker_id] = run_worker(
            own,
            worker_id,
            {"demo": counting_handler},
            heartbeat_interval_s=0.2,
            poll_interval_s=0.05,
            traceparent=TRACEPARENT,
            on_start=lambda runner: runners.__setitem__(worker_id, runner),
        )

    workers = ["gpu-w1", "gpu-w2"]
    for wid in workers:
        active_worker(store, wid)
    threads = [threading.Thread(target=run, args=(wid,)) for wid in workers]
    for t in threads:
        t.start()
    wait_for(lambda: store.task_counts().get(TaskStatus.COMPLETE) == 20, message="20 completed tasks")
    for wid in workers:
        assert store.transition_worker(wid, WorkerState.ACTIVE, WorkerState.DRAINING, "test: drain")
    for t in threads:
        t.join(timeout=10)
    for s in stores:
        s.close()

    assert codes == {"gpu-w1": ExitCode.OK, "gpu-w2": ExitCode.OK}
    assert sorted(runs) == sorted(ids)  # every task ran once, none twice
    tasks = [store.get_task(i) for i in ids]
    assert all(t is not None and t.status == TaskStatus.COMPLETE and t.attempts == 1 for t in tasks)
    assert {t.worker_id for t in tasks if t is not None} <= set(workers)
    assert sum(r.tasks_done for r in runners.values()) == 20
    for wid in workers:
        row = store.get_worker(wid)
        assert row is not None and row.last_heartbeat_at is not None
        assert "vram_total_mb" not in row.metadata  # no nvidia-smi here: nothing invented

    task_spans = [s for s in spans.get_finished_spans() if s.name == "worker.task"]
    assert len(task_spans) == 20
    assert {format(s.context.trace_id, "032x") for s in task_spans} == {TRACE_ID}  # inside the lifecycle trace
    assert {s.attributes["task.outcome"] for s in task_spans} == {"completed"}


def test_failing_handler_fails_the_task_back_to_the_queue(store: Store) -> None:
    (task_id,) = insert(store, 1, duration_s=0, fail=True, error="out of VRAM")
    active_worker(store, "gpu-fail")
    holder: list[WorkerRunner] = []
    thread = threading.Thread(
        target=run_worker,
        args=(store, "gpu-fail", demo_handler),
        kwargs={"heartbeat_interval_s": 0.2, "poll_interval_s": 0.05, "on_start": holder.append},
    )
    thread.start()
    wait_for(lambda: (t := store.get_task(task_id)) is not None and t.status == TaskStatus.FAILED, message="Failed")
    holder[0].stop("test over")
    thread.join(timeout=10)
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED
    assert task.error is not None and "out of VRAM" in task.error


def test_a_worker_whose_row_is_error_claims_nothing(store: Store) -> None:
    ids = insert(store, 3, duration_s=0)
    active_worker(store, "gpu-err")
    assert store.transition_worker("gpu-err", WorkerState.ACTIVE, WorkerState.ERROR, "test: heartbeat lost")
    code = run_worker(store, "gpu-err", demo_handler, heartbeat_interval_s=0.2, poll_interval_s=0.05)
    assert code is ExitCode.TOLD_TO_STOP
    for task_id in ids:
        task = store.get_task(task_id)
        assert task is not None and task.status == TaskStatus.QUEUED and task.attempts == 0


def test_a_worker_with_no_row_stops(store: Store) -> None:
    insert(store, 1, duration_s=0)
    code = run_worker(store, "gpu-ghost", demo_handler, heartbeat_interval_s=0.2, poll_interval_s=0.05)
    assert code is ExitCode.TOLD_TO_STOP
    assert store.task_counts().get(TaskStatus.QUEUED) == 1


def test_drain_finishes_the_held_task_and_exits_zero(store: Store, database_url: str, tmp_path: Path) -> None:
    first, second = insert(store, 2, duration_s=1.5)
    active_worker(store, "gpu-drain")
    proc = start_worker_process(database_url, "gpu-drain", tmp_path, TRACEPARENT=TRACEPARENT)
    try:
        held = wait_for(
            lambda: next((i for i in (first, second) if task_in_progress(store, i)), None), message="a claimed task"
        )
        assert store.transition_worker("gpu-drain", WorkerState.ACTIVE, WorkerState.DRAINING, "test: drain")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    other = second if held == first else first
    done, untouched = store.get_task(str(held)), store.get_task(other)
    assert done is not None and done.status == TaskStatus.COMPLETE
    assert untouched is not None and untouched.status == TaskStatus.QUEUED and untouched.attempts == 0

    logs = store.list_system_logs(source_id="gpu-drain")
    assert any("completed task" in rec.message for rec in logs), (tmp_path / "gpu-drain.out").read_text()
    assert all(rec.source_type == "worker" for rec in logs)
    task_logs = [rec for rec in logs if rec.task_id == held]
    assert task_logs and {rec.trace_id for rec in task_logs} == {TRACE_ID}


@pytest.mark.parametrize(
    ("duration_s", "grace_s", "expected"),
    [
        (30.0, "0.3", TaskStatus.QUEUED),  # the grace runs out: the task goes back to the queue
        (0.8, "10", TaskStatus.COMPLETE),  # the task finishes within the grace
    ],
)
def test_sigterm_mid_task_never_leaves_it_in_progress(
    store: Store, database_url: str, tmp_path: Path, duration_s: float, grace_s: str, expected: str
) -> None:
    (task_id,) = insert(store, 1, duration_s=duration_s)
    insert(store, 1, duration_s=0)  # a second task that must not be claimed after SIGTERM
    active_worker(store, "gpu-term")
    proc = start_worker_process(database_url, "gpu-term", tmp_path, WORKER_SHUTDOWN_GRACE_S=grace_s)
    try:
        wait_for(lambda: task_in_progress(store, task_id), message="the task to be claimed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, (tmp_path / "gpu-term.out").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    task = store.get_task(task_id)
    assert task is not None and task.status == expected
    assert store.task_counts().get(TaskStatus.IN_PROGRESS, 0) == 0
    assert store.task_counts().get(TaskStatus.QUEUED, 0) == (2 if expected == TaskStatus.QUEUED else 1)
