"""The reference worker never strands a task, and runs `concurrency` tasks at once.

Over the real `supabase` client against the loopback PostgREST stand-in (real SQL functions in the
real Postgres): the stand-in fails the calls that report a task's end, more times than the store's
own retries cover, and the task still ends where it should.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fleet.models import WorkerState
from store.base import NewTask, Store, TaskRow, TaskStatus
from store.postgres import PostgresStore
from store.supabase import SupabaseStore
from telemetry import tracing
from tests.support.polling import wait_for
from tests.support.postgrest_standin import PostgrestStandin
from worker.handlers import TaskContext, demo_handler
from worker.runner import ExitCode, WorkerRunner, run_worker

# The store retries a safe call once (two tries); the stand-in fails more calls than that.
STORE_RETRIES = 1
FAILED_CALLS = 6  # three of the worker's own tries fail, the fourth lands


@pytest.fixture
def standin(database_url: str) -> Iterator[PostgrestStandin]:
    with PostgrestStandin(database_url) as running:
        yield running


@pytest.fixture
def pg(database_url: str) -> Iterator[PostgresStore]:
    """The test's own look at the database, beside the stand-in (whose failures are the worker's)."""
    store = PostgresStore(database_url, max_size=2)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def sb(standin: PostgrestStandin) -> Iterator[SupabaseStore]:
    store = SupabaseStore(standin.url, standin.service_key, retries=STORE_RETRIES, backoff_base_s=0.01, timeout_s=5.0)
    try:
        yield store
    finally:
        store.close()


def _active_worker(store: Store, worker_id: str) -> None:
    store.create_worker(worker_id, reason="test")
    assert store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "test: promoted")


class _Worker:
    """A worker in a thread of this process; `drain()` ends it the way the orchestrator does."""

    def __init__(self, store: Store, worker_id: str, handler: Any, **kwargs: Any) -> None:
        self.store, self.worker_id = store, worker_id
        self.runner: WorkerRunner | None = None
        self.code: ExitCode | None = None
        _active_worker(store, worker_id)
        heartbeat_interval_s = kwargs.pop("heartbeat_interval_s", 60.0)  # no beat in the failure window

        def run() -> None:
            self.code = run_worker(
                store,
                worker_id,
                handler,
                heartbeat_interval_s=heartbeat_interval_s,
                poll_interval_s=0.05,
                on_start=lambda runner: setattr(self, "runner", runner),
                **kwargs,
            )

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():  # a failed test: stop the worker before its store closes
            if self.runner is not None:
                self.runner.stop("test over")
            self.thread.join(timeout=30)

    def drain(self) -> ExitCode | None:
        assert self.store.transition_worker(self.worker_id, WorkerState.ACTIVE, WorkerState.DRAINING, "test: drain")
        if self.runner is not None:
            self.runner._heartbeat_once()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        return self.code


def _task_ends(store: Store, task_id: str, status: str) -> TaskRow:
    def ended() -> TaskRow | None:
        task = store.get_task(task_id)
        return task if task is not None and task.status == status else None

    task = wait_for(ended, 30, f"task {task_id} {status}")
    assert task is not None
    return task


def test_a_transient_database_error_during_complete_task_still_completes_the_task(
    sb: SupabaseStore, standin: PostgrestStandin, pg: PostgresStore
) -> None:
    (task_id,) = pg.insert_tasks([NewTask(task_type="demo", user_id="u", params={"duration_s": 0})])

    def handler(task: TaskRow, ctx: TaskContext) -> dict[str, Any]:
        standin.fail_next(FAILED_CALLS, 503)  # the next calls (this task's complete_task) get 503
        return {"ok": True}

    with _Worker(sb, "gpu-complete", {"demo": handler}) as worker:
        task = _task_ends(pg, task_id, TaskStatus.COMPLETE)
        assert task.result == {"ok": True} and task.worker_id == "gpu-complete"
        assert standin.calls.count("complete_task") == FAILED_CALLS + 1
        assert worker.drain() is ExitCode.OK


def test_a_complete_task_whose_answer_was_lost_counts_as_completed(
    sb: SupabaseStore, standin: PostgrestStandin, pg: PostgresStore
) -> None:
    spans = InMemorySpanExporter()
    tracing._ensure_provider().add_span_processor(SimpleSpanProcessor(spans))
    (task_id,) = pg.insert_tasks([NewTask(task_type="demo", user_id="u", params={"duration_s": 0})])

    def handler(task: TaskRow, ctx: TaskContext) -> dict[str, Any]:
        # The first try commits but its answer is lost; so does the store's own retry (which finds
        # the task Complete already); the worker's next try must not call the task lost.
        standin.fail_next(STORE_RETRIES + 1, 503, execute=True)
        return {"ok": True}

    with _Worker(sb, "gpu-lost-answer", {"demo": handler}) as worker:
        _task_ends(pg, task_id, TaskStatus.COMPLETE)
        assert worker.drain() is ExitCode.OK
    assert standin.calls.count("complete_task") == STORE_RETRIES + 2
    outcomes = [(s.attributes or {}).get("task.outcome") for s in spans.get_finished_spans() if s.name == "worker.task"]
    assert outcomes[-1:] == ["completed"], outcomes


def test_a_claim_whose_answer_was_lost_is_found_and_run(
    sb: SupabaseStore, standin: PostgrestStandin, pg: PostgresStore
) -> None:
    """The claim commits but its answer never arrives: the worker asks what it holds before claiming
    again, runs that task, and leaves nothing In Progress."""
    (task_id,) = pg.insert_tasks([NewTask(task_type="demo", user_id="u", params={"duration_s": 0})])
    standin.fail_next(1, 503, execute=True, only="claim_next_task")
    with _Worker(sb, "gpu-lost-claim", {"demo": demo_handler}) as worker:
        task = _task_ends(pg, task_id, TaskStatus.COMPLETE)
        assert task.worker_id == "gpu-lost-claim" and task.attempts == 1
        assert worker.drain() is ExitCode.OK
        assert worker.runner is not None and worker.runner.tasks_done == 1
    calls = standin.calls
    assert "worker_held_tasks" in calls and calls.index("worker_held_tasks") > calls.index("claim_next_task")


def test_a_transient_database_error_during_fail_task_still_fails_the_task(
    sb: SupabaseStore, standin: PostgrestStandin, pg: PostgresStore
) -> None:
    pg.configure_queue(per_user_limit=3, max_task_attempts=1)  # one failure is final: no re-claim
    (task_id,) = pg.insert_tasks([NewTask(task_type="demo", user_id="u")])

    def handler(task: TaskRow, ctx: TaskContext) -> dict[str, Any]:
        standin.fail_next(FAILED_CALLS, 503)
        raise RuntimeError("out of VRAM")

    with _Worker(sb, "gpu-fail", {"demo": handler}) as worker:
        task = _task_ends(pg, task_id, TaskStatus.FAILED)
        assert task.error == "RuntimeError: out of VRAM"
        assert standin.calls.count("fail_task") == FAILED_CALLS + 1
        assert worker.drain() is ExitCode.OK


def test_a_stopping_worker_gives_up_reporting_after_its_grace(
    sb: SupabaseStore, standin: PostgrestStandin, pg: PostgresStore
) -> None:
    """While the database stays down, a worker told to stop retries for its shutdown grace, then exits
    (the orchestrator requeues the task once the pod is gone): it never hangs on a report."""
    (task_id,) = pg.insert_tasks([NewTask(task_type="demo", user_id="u", params={"duration_s": 0})])

    def handler(task: TaskRow, ctx: TaskContext) -> dict[str, Any]:
        standin.fail_next(10_000, 503)  # down for good
        return {"ok": True}

    with _Worker(sb, "gpu-stop", {"demo": handler}, shutdown_grace_s=1.0) as worker:
        wait_for(lambda: standin.calls.count("complete_task") >= 6, 30, "complete_task retried")
        assert worker.runner is not None
        started = time.monotonic()
        worker.runner.stop("test: SIGTERM")
        worker.thread.join(timeout=30)
        assert not worker.thread.is_alive() and time.monotonic() - started < 15
        assert worker.code is ExitCode.OK
    task = pg.get_task(task_id)
    assert task is not None and task.status == TaskStatus.IN_PROGRESS  # for the orchestrator's requeue


def test_the_worker_runs_concurrency_tasks_at_once_and_no_more(pg: PostgresStore, database_url: str) -> None:
    store = PostgresStore(database_url, max_size=6)
    try:
        ids = store.insert_tasks(
            [NewTask(task_type="demo", user_id=f"user-{i}", params={"duration_s": 1.0}) for i in range(7)]
        )
        running = 0
        peak = 0
        lock = threading.Lock()

        def handler(task: TaskRow, ctx: TaskContext) -> dict[str, Any]:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                return demo_handler(task, ctx)
            finally:
                with lock:
                    running -= 1

        with _Worker(store, "gpu-three", {"demo": handler}, concurrency=3, heartbeat_interval_s=0.2) as worker:
            wait_for(lambda: pg.task_counts().get(TaskStatus.COMPLETE) == len(ids), 60, "all tasks complete")
            assert peak == 3
            assert worker.drain() is ExitCode.OK
            assert worker.runner is not None and worker.runner.tasks_done == len(ids)
    finally:
        store.close()
