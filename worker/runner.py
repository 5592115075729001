"""The reference worker's loop: heartbeat, claim, run, complete or fail, drain, stop.

Rules (the pod contract; see the README):
- Heartbeat every `heartbeat_interval_s` through `worker_heartbeat`, from its own thread, so a
  long task never makes the worker look dead. The answer is the status the orchestrator set.
- Claim only through `claim_next_task` (the database decides: active workers, dependencies,
  per-user limits, SKIP LOCKED). One task at a time.
- `draining`: claim nothing more, finish the task held (no time limit: the orchestrator's drain
  timeout governs), exit 0.
- `terminating` / `terminated` / `error`, or no row at all: claim nothing more, give the task held
  `shutdown_grace_s`, fail it back to the queue if it is still running, exit 3.
- SIGTERM (or `stop()`): the same, but exit 0. A task is never left In Progress by a worker that
  exits on its own: it is completed, or failed (requeued, or Failed past max attempts).
"""

from __future__ import annotations

import contextvars
import enum
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.models import WorkerState
from store.base import Store, TaskRow
from telemetry import metrics
from worker import tracing
from worker.handlers import Handler, HandlerRegistry, TaskContext
from worker.logs import CURRENT_TASK_ID

__all__ = ["ExitCode", "WorkerRunner", "query_vram", "run_worker"]

logger = logging.getLogger("worker")

_STOP_STATES = frozenset({WorkerState.TERMINATING, WorkerState.TERMINATED, WorkerState.ERROR})


class ExitCode(enum.IntEnum):
    OK = 0  # drained, or stopped by SIGTERM
    FATAL = 1  # an unexpected error in the worker itself
    TOLD_TO_STOP = 3  # the worker row is error / terminating / terminated / missing


def query_vram() -> dict[str, Any] | None:
    """VRAM figures from nvidia-smi, summed over GPUs; None when there is no nvidia-smi (no guess)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        rows = [[int(float(x)) for x in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        metrics.record_error("worker", "vram_probe")
        logger.warning("nvidia-smi is present but its answer could not be read", exc_info=True)
        return None
    if not rows:
        return None
    return {
        "vram_total_mb": sum(r[0] for r in rows),
        "vram_used_mb": sum(r[1] for r in rows),
        "gpu_count": len(rows),
    }


@dataclass
class WorkerRunner:
    """One worker. `run()` blocks until the worker is done and returns its exit code."""

    store: Store
    worker_id: str
    handlers: HandlerRegistry
    heartbeat_interval_s: float = 10.0
    poll_interval_s: float = 1.0
    shutdown_grace_s: float = 30.0
    task_types: list[str] | None = None
    boot_delay_s: float = 0.0
    traceparent: str | None = None
    stop_heartbeat_after_s: float | None = None  # failure injection: go silent after this long
    vram_probe: Callable[[], dict[str, Any] | None] = query_vram
    # --- state, shared between the main loop and the heartbeat thread ---
    status: WorkerState | None = field(default=None, init=False)
    tasks_done: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._stop = threading.Event()  # SIGTERM / stop(): stop claiming, grace for the held task
        self._told: WorkerState | None = None  # draining, or a stop state, as the row says
        self._wake = threading.Event()  # cuts an idle wait short
        self._stop_reason = ""
        self._started = time.monotonic()
        self._heartbeats = 0
        self._current: TaskRow | None = None

    # --- control -----------------------------------------------------------------------------

    def stop(self, reason: str = "stop requested") -> None:
        """Stop claiming; give the held task `shutdown_grace_s`; then exit (safe from a signal handler)."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()
            self._wake.set()

    def _should_stop_claiming(self) -> bool:
        return self._stop.is_set() or self._told is not None

    def _grace_applies(self) -> bool:
        """The held task has a deadline (SIGTERM or a stop state), unlike a drain."""
        return self._stop.is_set() or (self._told is not None and self._told in _STOP_STATES)

    # --- heartbeat ---------------------------------------------------------------------------

    def _heartbeat_once(self) -> None:
        metadata: dict[str, Any] = {}
        if self._heartbeats == 0:
            metadata.update({"hostname": socket.gethostname(), "pid": os.getpid()})
        vram = self.vram_probe()
        if vram:
            metadata.update(vram)
        try:
            status = self.store.worker_heartbeat(self.worker_id, metadata or None)
        except Exception as exc:  # the next beat tries again; the orchestrator tolerates a few missed
            metrics.record_error("worker", "heartbeat")
            logger.warning("heartbeat failed: %s: %s", type(exc).__name__, exc)
            return
        self._heartbeats += 1
        previous, self.status = self.status, status
        if status != previous:
            logger.info("worker row status: %s", status)
        if status is None:
            self._tell(WorkerState.ERROR, "the worker row does not exist")
        elif status is WorkerState.DRAINING:
            self._tell(WorkerState.DRAINING, "the orchestrator asked this worker to drain")
        elif status in _STOP_STATES:
            self._tell(status, f"the worker row says {status}")

    def _tell(self, state: WorkerState, why: str) -> None:
        if self._told is None or (self._told is WorkerState.DRAINING and state in _STOP_STATES):
            self._told = state
            self._stop_reason = why
            logger.info("%s: no more claims", why)
            self._wake.set()

    def _heartbeat_loop(self, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_interval_s):
            if (
                self.stop_heartbeat_after_s is not None
                and time.monotonic() - self._started >= self.stop_heartbeat_after_s
            ):
                logger.warning("fault injection: heartbeats stop now")
                return
            self._heartbeat_once()

    # --- main loop ---------------------------------------------------------------------------

    def run(self) -> ExitCode:
        logger.info(
            "worker %s starting (boot delay %.1fs, heartbeat every %.1fs, task types %s)",
            self.worker_id,
            self.boot_delay_s,
            self.heartbeat_interval_s,
            self.task_types or "all",
        )
        if self.boot_delay_s > 0 and self._stop.wait(self.boot_delay_s):
            logger.info("stopped while booting")
            return ExitCode.OK
        self._heartbeat_once()
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(done,), name="worker-heartbeat", daemon=True)
        beat.start()
        try:
            while not self._should_stop_claiming():
                task = self._claim()
                if task is None:
                    self._wake.wait(self.poll_interval_s)
                    self._wake.clear()
                    continue
                self._run_task(task)
        finally:
            done.set()
        logger.info("worker %s exits: %s (%d task(s) done)", self.worker_id, self._stop_reason, self.tasks_done)
        if self._told is not None and self._told in _STOP_STATES:
            return ExitCode.TOLD_TO_STOP
        return ExitCode.OK

    def _claim(self) -> TaskRow | None:
        try:
            return self.store.claim_next_task(self.worker_id, self.task_types)
        except Exception as exc:  # the next poll claims again
            metrics.record_error("worker", "claim")
            logger.warning("claim failed: %s: %s", type(exc).__name__, exc)
            return None

    def _run_task(self, task: TaskRow) -> None:
        handler = self.handlers.for_type(task.task_type)
        token = CURRENT_TASK_ID.set(task.id)
        try:
            attributes = {
                "task.id": task.id,
                "task.type": task.task_type,
                "task.attempt": task.attempts,
                "worker.id": self.worker_id,
            }
            with tracing.task_span(self.traceparent, attributes) as span:
                logger.info("claimed task %s (%s, attempt %d)", task.id, task.task_type, task.attempts)
                if handler is None:
                    self._fail(task, f"worker {self.worker_id} has no handler for task type {task.task_type!r}")
                    span.set_attribute("task.outcome", "no_handler")
                    return
                outcome = self._execute(task, handler)
                span.set_attribute("task.outcome", outcome)
        finally:
            CURRENT_TASK_ID.reset(token)
            self.tasks_done += 1

    def _execute(self, task: TaskRow, handler: Handler) -> str:
        ctx = TaskContext(worker_id=self.worker_id, task_id=task.id)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = handler(task, ctx)
            except BaseException as exc:
                box["error"] = exc

        # The handler runs in its own thread (inside this span's context) so the main thread can
        # enforce the shutdown grace period and still report the task's fate.
        runner = threading.Thread(
            target=contextvars.copy_context().run, args=(target,), name=f"task-{task.id[:8]}", daemon=True
        )
        runner.start()
        deadline: float | None = None
        while runner.is_alive():
            runner.join(0.1)
            if deadline is None and self._grace_applies():
                deadline = time.monotonic() + self.shutdown_grace_s
                logger.info("shutting down: task %s has %.1fs to finish", task.id, self.shutdown_grace_s)
            if deadline is not None and time.monotonic() >= deadline and runner.is_alive():
                ctx.cancelled.set()
                runner.join(min(1.0, self.shutdown_grace_s))
                if runner.is_alive() or "error" in box:
                    self._fail(task, f"worker {self.worker_id} stopped ({self._stop_reason}) before the task finished")
                    return "abandoned"
        if "error" in box:
            exc = box["error"]
            self._fail(task, f"{type(exc).__name__}: {exc}")
            logger.warning("task %s failed: %s: %s", task.id, type(exc).__name__, exc)
            return "failed"
        result = box.get("result")
        try:
            ok = self.store.complete_task(task.id, self.worker_id, result if isinstance(result, dict) else None)
        except Exception:
            metrics.record_error("worker", "complete_task")
            logger.exception("complete_task(%s) failed; the orchestrator will requeue it", task.id)
            return "complete_failed"
        if ok:
            logger.info("completed task %s", task.id)
            return "completed"
        logger.warning("task %s was no longer ours to complete (requeued by the orchestrator?)", task.id)
        return "lost"

    def _fail(self, task: TaskRow, error: str) -> None:
        for attempt in range(3):
            try:
                status = self.store.fail_task(task.id, self.worker_id, error)
                logger.info("task %s failed back to the queue: now %s (%s)", task.id, status, error)
                return
            except Exception as exc:
                metrics.record_error("worker", "fail_task")
                logger.warning("fail_task(%s) attempt %d: %s: %s", task.id, attempt + 1, type(exc).__name__, exc)
                time.sleep(0.2 * (attempt + 1))
        logger.error("could not fail task %s; the orchestrator will requeue it when this worker is gone", task.id)


def run_worker(
    store: Store,
    worker_id: str,
    handlers: HandlerRegistry | Handler | Mapping[str, Handler],
    *,
    heartbeat_interval_s: float = 10.0,
    poll_interval_s: float = 1.0,
    shutdown_grace_s: float = 30.0,
    task_types: list[str] | None = None,
    boot_delay_s: float = 0.0,
    traceparent: str | None = None,
    stop_heartbeat_after_s: float | None = None,
    install_signal_handlers: bool = False,
    vram_probe: Callable[[], dict[str, Any] | None] = query_vram,
    on_start: Callable[[WorkerRunner], None] | None = None,
) -> ExitCode:
    """Run a worker until it drains, is told to stop, or gets SIGTERM; returns the exit code.

    `handlers`: a registry, one handler for every type, or `{"type": handler, "*": default}`.
    `on_start` receives the runner (tests call `runner.stop()` on it instead of sending SIGTERM).
    """
    registry = HandlerRegistry.of(handlers)
    runner = WorkerRunner(
        store=store,
        worker_id=worker_id,
        handlers=registry,
        heartbeat_interval_s=heartbeat_interval_s,
        poll_interval_s=poll_interval_s,
        shutdown_grace_s=shutdown_grace_s,
        task_types=task_types if task_types else registry.claimable_types(),
        boot_delay_s=boot_delay_s,
        traceparent=traceparent,
        stop_heartbeat_after_s=stop_heartbeat_after_s,
        vram_probe=vram_probe,
    )
    if install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: runner.stop(f"received {signal.Signals(signum).name}"))
    if on_start is not None:
        on_start(runner)
    return runner.run()
