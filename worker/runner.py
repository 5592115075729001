"""The reference worker's loop: heartbeat, claim, run, complete or fail, drain, stop.

Rules (the pod contract; see the README):
- Heartbeat every `heartbeat_interval_s` through `worker_heartbeat`, from its own thread, so a
  long task never makes the worker look dead. The answer is the status the orchestrator set.
- Claim only through `claim_next_task` (the database decides: active workers, dependencies,
  per-user limits, SKIP LOCKED). At most `concurrency` tasks at once (`WORKER_CONCURRENCY`, which
  the orchestrator sets to `scaling.tasks_per_worker`, the number its policy sizes the fleet by).
- `draining`: claim nothing more, finish the task held (no time limit: the orchestrator's drain
  timeout governs), exit 0.
- `terminating` / `terminated` / `error`, or no row at all: claim nothing more, give the task held
  `shutdown_grace_s`, fail it back to the queue if it is still running, exit 3.
- SIGTERM (or `stop()`): the same, but exit 0. A task is never left In Progress by a worker that
  exits on its own: it is completed, or failed (requeued, or Failed past max attempts).
- The database out of reach is waited out, never a reason to exit: heartbeats keep trying every
  interval, claims back off (capped, with jitter), and a task that runs meanwhile finishes and is
  completed once the database is back.
- A `complete_task` / `fail_task` that fails is tried again, with exponential backoff and full
  jitter, until it succeeds; only a worker that is stopping gives up, once its shutdown grace is
  over (its pod is then about to go, and the orchestrator requeues what it held). One failed call
  never strands a task In Progress on a live worker. A repeat whose first try did commit (its
  answer was lost) finds the task already out of In Progress; `worker_task_status` says what happened.
- A claim that fails without an answer may have committed: before claiming again the worker asks
  `worker_held_tasks` and runs what it holds, so no task is stranded In Progress on a live worker.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet import supervision
from fleet.models import WorkerState
from store.base import DatabaseUnavailable, Store, StoreError, TaskRow, TaskStatus
from telemetry import metrics
from worker import tracing
from worker.handlers import Handler, HandlerRegistry, TaskContext
from worker.logs import CURRENT_TASK_ID

__all__ = ["ExitCode", "WorkerRunner", "query_vram", "run_worker"]

logger = logging.getLogger("worker")

_STOP_STATES = frozenset({WorkerState.TERMINATING, WorkerState.TERMINATED, WorkerState.ERROR})

# Reporting a task's end (complete_task / fail_task) is retried with exponential backoff and full
# jitter: waits uniform in [0, min(cap, base * 2^n)]. The cap keeps a worker that waited out a long
# outage from sleeping long after the database is back; the jitter keeps a fleet of workers that
# lost the database together from hammering it together when it returns.
REPORT_BACKOFF_BASE_S = 0.2
REPORT_BACKOFF_CAP_S = 10.0
# A StoreError that is not DatabaseUnavailable is the database's own answer (it refused the call).
# It may still be passing (a statement timeout), so it is tried this many times before the worker
# changes what it reports: a refused result becomes a failed attempt, a refused error text a plain one.
REPORT_REFUSALS_TOLERATED = 3
# During an outage the first failed heartbeat is logged, then one line per this many seconds with
# the count, so a long outage does not bury the worker's own log under one warning per beat.
HEARTBEAT_FAILURE_LOG_EVERY_S = 60.0
# Postgres text cannot hold NUL, and an error message is for people: longer texts are cut.
MAX_ERROR_CHARS = 4000


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
    concurrency: int = 1  # tasks run at once (WORKER_CONCURRENCY = scaling.tasks_per_worker)
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
        self._heartbeat_failures = 0  # consecutive
        self._heartbeat_failure_logged_at: float | None = None
        self._done_lock = threading.Lock()  # tasks_done is counted by every task slot
        self._fatal: BaseException | None = None  # an unexpected error in a task slot
        self._claim_outage: supervision.Outage | None = None  # claims failing: the database is away
        # A claim call failed without an answer: it may have committed. Until the worker has asked which
        # tasks it holds, it does not claim again (else a task taken by the lost call stays In Progress).
        self._claim_unsure = False
        self._running: set[str] = set()  # ids of the tasks its slots run now
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")

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
            self._heartbeat_failures += 1
            now = time.monotonic()
            logged = self._heartbeat_failure_logged_at
            if logged is None or now - logged >= HEARTBEAT_FAILURE_LOG_EVERY_S:
                self._heartbeat_failure_logged_at = now
                logger.warning(
                    "heartbeat failed (%d in a row; next such line in %.0fs at the earliest): %s: %s",
                    self._heartbeat_failures,
                    HEARTBEAT_FAILURE_LOG_EVERY_S,
                    type(exc).__name__,
                    exc,
                )
            return
        if self._heartbeat_failures:
            logger.info("heartbeat back after %d failed in a row", self._heartbeat_failures)
            self._heartbeat_failures = 0
            self._heartbeat_failure_logged_at = None
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
            "worker %s starting (boot delay %.1fs, heartbeat every %.1fs, task types %s, %d task(s) at once)",
            self.worker_id,
            self.boot_delay_s,
            self.heartbeat_interval_s,
            self.task_types or "all",
            self.concurrency,
        )
        if self.boot_delay_s > 0 and self._stop.wait(self.boot_delay_s):
            logger.info("stopped while booting")
            return ExitCode.OK
        self._heartbeat_once()
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(done,), name="worker-heartbeat", daemon=True)
        beat.start()
        slots: list[threading.Thread] = []
        try:
            while not self._should_stop_claiming():
                slots = [slot for slot in slots if slot.is_alive()]
                task = self._claim() if len(slots) < self.concurrency else None
                if task is None:
                    # A finished task or a stop cuts the wait short; while claims fail it backs off.
                    wait = supervision.outage_wait_s(self._claim_outage, time.time(), default_s=self.poll_interval_s)
                    self._wake.wait(max(wait, self.poll_interval_s))
                    self._wake.clear()
                    continue
                slot = threading.Thread(target=self._slot, args=(task,), name=f"slot-{task.id[:8]}", daemon=True)
                slots.append(slot)
                slot.start()
            for slot in slots:  # each held task finishes, or is failed back once its grace is over
                slot.join()
        finally:
            done.set()
        logger.info("worker %s exits: %s (%d task(s) done)", self.worker_id, self._stop_reason, self.tasks_done)
        if self._fatal is not None:
            return ExitCode.FATAL
        if self._told is not None and self._told in _STOP_STATES:
            return ExitCode.TOLD_TO_STOP
        return ExitCode.OK

    def _slot(self, task: TaskRow) -> None:
        """Run one task in a slot of its own; a freed slot wakes the claim loop."""
        try:
            self._run_task(task)
        except Exception as exc:  # a bug of the worker itself: stop claiming, exit FATAL
            metrics.record_error("worker", "task_slot")
            logger.exception("task slot of %s failed", task.id)
            self._fatal = exc
            self.stop(f"unexpected error running task {task.id}: {type(exc).__name__}")
        finally:
            self._running.discard(task.id)
            self._wake.set()

    def _claim(self) -> TaskRow | None:
        task = self._claim_or_adopt()
        if task is not None:
            self._running.add(task.id)
        return task

    def _claim_or_adopt(self) -> TaskRow | None:
        try:
            if self._claim_unsure:
                held = [t for t in self.store.worker_held_tasks(self.worker_id) if t.id not in self._running]
                self._claim_unsure = False
                if held:
                    logger.warning("task %s was claimed by a call whose answer was lost: running it", held[0].id)
                    self._claim_unsure = len(held) > 1  # the next free slot takes the next one
                    return held[0]
            task = self.store.claim_next_task(self.worker_id, self.task_types)
        except Exception as exc:  # the next poll claims again (after a backoff while the database is away)
            self._claim_unsure = True
            metrics.record_error("worker", "claim")
            if isinstance(exc, DatabaseUnavailable):
                self._claim_outage = supervision.after_outage_failure(
                    self._claim_outage,
                    time.time(),
                    str(exc),
                    base_s=self.poll_interval_s,
                    cap_s=REPORT_BACKOFF_CAP_S,
                    jitter=random.random(),
                )
                logger.warning("claim failed: %s; %s", exc, self._claim_outage.summary())
            else:
                logger.warning("claim failed: %s: %s", type(exc).__name__, exc)
            return None
        if self._claim_outage is not None:
            logger.info("claims work again after %.0fs", self._claim_outage.seconds(time.time()))
            self._claim_outage = None
        return task

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
            with self._done_lock:
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
        return self._complete(task, result if isinstance(result, dict) else None)

    # --- reporting a task's end: never given up on a live worker ----------------------------

    def _report_deadline(self, deadline: float | None) -> float | None:
        """Retries go on while the worker lives; a stopping worker gets its shutdown grace, no more."""
        if deadline is None and self._grace_applies():
            return time.monotonic() + self.shutdown_grace_s
        return deadline

    def _backoff(self, attempt: int, deadline: float | None) -> bool:
        """Wait before retry `attempt` (1, 2, ...); False when the stopping worker's grace is over."""
        wait = random.uniform(0, min(REPORT_BACKOFF_CAP_S, REPORT_BACKOFF_BASE_S * 2 ** (attempt - 1)))
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = min(wait, left)
        time.sleep(wait)
        return True

    def _complete(self, task: TaskRow, result: dict[str, Any] | None) -> str:
        """`complete_task` until it answers; a result the database keeps refusing fails the task instead."""
        deadline: float | None = None
        refusals = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                ok = self.store.complete_task(task.id, self.worker_id, result)
            except Exception as exc:
                metrics.record_error("worker", "complete_task")
                refused = isinstance(exc, StoreError) and not isinstance(exc, DatabaseUnavailable)
                refusals += int(refused)
                logger.warning("complete_task(%s) attempt %d failed: %s: %s", task.id, attempt, type(exc).__name__, exc)
                if refusals >= REPORT_REFUSALS_TOLERATED:
                    self._fail(task, f"the database refused the task's result: {type(exc).__name__}: {exc}")
                    return "result_refused"
                deadline = self._report_deadline(deadline)
                if not self._backoff(attempt, deadline):
                    logger.error(
                        "gave up completing task %s: the worker is stopping; the orchestrator requeues it "
                        "once this pod is gone",
                        task.id,
                    )
                    return "complete_failed"
                continue
            if ok:
                logger.info("completed task %s", task.id)
                return "completed"
            if attempt > 1 and self._is_done_by_me(task.id, TaskStatus.COMPLETE):
                logger.info("completed task %s (an earlier try committed; its answer was lost)", task.id)
                return "completed"
            logger.warning("task %s was no longer ours to complete (requeued by the orchestrator?)", task.id)
            return "lost"

    def _is_done_by_me(self, task_id: str, status: str) -> bool:
        try:
            # Its own credential may read no task, only what became of one it held.
            held_status = self.store.worker_task_status(task_id, self.worker_id)
        except Exception as exc:  # only for the log line: the task's fate is in its row either way
            metrics.record_error("worker", "worker_task_status")
            logger.warning("worker_task_status(%s) failed: %s: %s", task_id, type(exc).__name__, exc)
            return False
        return held_status == status

    def _fail(self, task: TaskRow, error: str) -> None:
        """`fail_task` until it answers (the task goes back to the queue, or Failed past max attempts)."""
        error = error.replace("\x00", "")[:MAX_ERROR_CHARS]
        deadline: float | None = None
        refusals = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                status = self.store.fail_task(task.id, self.worker_id, error)
            except Exception as exc:
                metrics.record_error("worker", "fail_task")
                refusals += int(isinstance(exc, StoreError) and not isinstance(exc, DatabaseUnavailable))
                logger.warning("fail_task(%s) attempt %d failed: %s: %s", task.id, attempt, type(exc).__name__, exc)
                if refusals == REPORT_REFUSALS_TOLERATED:
                    error = f"the task failed; the database refused its error text ({type(exc).__name__})"
                deadline = self._report_deadline(deadline)
                if not self._backoff(attempt, deadline):
                    logger.error(
                        "could not fail task %s before the worker stopped; the orchestrator requeues it once "
                        "this pod is gone",
                        task.id,
                    )
                    return
                continue
            if status is None and attempt > 1:
                logger.info("task %s was already out of In Progress (an earlier try committed?)", task.id)
            else:
                logger.info("task %s failed back to the queue: now %s (%s)", task.id, status, error)
            return


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
    concurrency: int = 1,
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
        concurrency=concurrency,
    )
    if install_signal_handlers:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: runner.stop(f"received {signal.Signals(signum).name}"))
    if on_start is not None:
        on_start(runner)
    return runner.run()
