"""Task handlers: what a worker runs for a task, chosen by task type.

A handler is `handler(task: TaskRow, ctx: TaskContext) -> dict | None`. It returns the task's
result (stored with `complete_task`) or raises to fail the task (`fail_task`, the exception's
text becomes the task's error). A long handler should watch `ctx.cancelled`: it is set when the
worker must give the task up (SIGTERM grace exceeded).

`--handler module:function` sets the default handler; `--handler type=module:function` sets the
handler of one task type. With no default, the worker claims only the types it has handlers for.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from store.base import TaskRow

__all__ = [
    "OOM_KILLED_EXIT_CODE",
    "Handler",
    "HandlerRegistry",
    "TaskCancelled",
    "TaskContext",
    "demo_handler",
    "load_handler",
    "parse_handler_specs",
]


@dataclass(frozen=True)
class TaskContext:
    worker_id: str
    task_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("worker.task"))


Handler = Callable[[TaskRow, TaskContext], "dict[str, Any] | None"]


class TaskCancelled(Exception):
    """Raised by a handler that gave up because `ctx.cancelled` was set."""


# The exit status of a process the kernel's OOM killer ended (128 + SIGKILL), as a shell reports it.
OOM_KILLED_EXIT_CODE = 137


def demo_handler(task: TaskRow, ctx: TaskContext) -> dict[str, Any]:
    """The shipped demo: sleeps `params.duration_s` (default 1), fails when `params.fail` is true.

    `params.exit_pod: true` ends the whole worker process at once (`os._exit`, no cleanup, no
    `fail_task`), as an out-of-memory kill or a segfault would: a poison task for demos and tests.
    The pod's process is gone with the task In Progress; the orchestrator counts that loss against
    the task (see `requeue_worker_tasks`), not against the fleet.
    """
    if task.params.get("exit_pod") is True:
        print(
            f"worker {ctx.worker_id}: task {task.id} has exit_pod: the process exits now "
            f"(status {OOM_KILLED_EXIT_CODE}, as an OOM kill)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(OOM_KILLED_EXIT_CODE)
    duration = float(task.params.get("duration_s", 1.0))
    ctx.logger.info("demo task %s (%s): working for %.2fs", task.id, task.task_type, duration)
    if ctx.cancelled.wait(duration):
        raise TaskCancelled(f"cancelled after less than {duration}s")
    if task.params.get("fail"):
        raise RuntimeError(str(task.params.get("error") or "demo task told to fail"))
    return {"slept_s": duration, "worker_id": ctx.worker_id}


def load_handler(ref: str) -> Handler:
    """`package.module:function` -> the function."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"handler {ref!r} must look like package.module:function")
    module = importlib.import_module(module_name)
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"handler {ref!r}: module {module_name} has no {attr}") from None
    if not callable(fn):
        raise ValueError(f"handler {ref!r} is not callable")
    return fn  # type: ignore[no-any-return]


@dataclass(frozen=True)
class HandlerRegistry:
    default: Handler | None = None
    by_type: Mapping[str, Handler] = field(default_factory=dict)

    def for_type(self, task_type: str) -> Handler | None:
        return self.by_type.get(task_type, self.default)

    def claimable_types(self) -> list[str] | None:
        """Task types to claim: None (all) when a default handler exists."""
        return None if self.default is not None else sorted(self.by_type)

    @classmethod
    def of(cls, handlers: HandlerRegistry | Handler | Mapping[str, Handler]) -> HandlerRegistry:
        if isinstance(handlers, HandlerRegistry):
            return handlers
        if isinstance(handlers, Mapping):
            return cls(default=handlers.get("*"), by_type={k: v for k, v in handlers.items() if k != "*"})
        return cls(default=handlers)


def parse_handler_specs(specs: Iterable[str]) -> HandlerRegistry:
    """`["mod:fn", "travel_segment=mod:other"]` -> a registry (default + per type)."""
    default: Handler | None = None
    by_type: dict[str, Handler] = {}
    for spec in specs:
        task_type, eq, ref = spec.partition("=")
        if eq:
            by_type[task_type.strip()] = load_handler(ref.strip())
        else:
            default = load_handler(spec.strip())
    return HandlerRegistry(default=default, by_type=by_type)
