"""The Scaler's directory of WorkerLifecycle actors on Ray (a `provisioning.LifecycleDirectory`).

Handles are cached and re-attached by name. How a handle is obtained (`get_if_exists` on the
actor named after the worker) is actors/remote.py's business: it builds this directory with its
`get_or_create_lifecycle` (`remote.lifecycle_directory`), so this module never imports remote.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

__all__ = ["RayLifecycles"]

# How long a request to a lifecycle (drain, park, resume, retire) may take before the Scaler moves on
# (it asks again next cycle if the decision still stands).
_DRAIN_CALL_TIMEOUT_S = 10.0


class RayLifecycles:
    """WorkerLifecycle actor handles by worker id; `attach(worker_id)` re-attaches or creates one."""

    def __init__(self, attach: Callable[[str], ActorHandle[Any]]) -> None:
        self._attach = attach
        self._handles: dict[str, ActorHandle[Any]] = {}
        self._lock = threading.Lock()  # ensure() is also called from the Scaler's provision threads

    def __len__(self) -> int:
        return len(self._handles)

    def ensure(self, worker_id: str) -> None:
        """The lifecycle of `worker_id` exists: re-attached if it runs, created if not (never two)."""
        with self._lock:
            if worker_id in self._handles:
                return
        handle = self._attach(worker_id)  # get_if_exists: never two
        with self._lock:
            self._handles.setdefault(worker_id, handle)

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None:
        self._request(worker_id, "drain", reason, epoch)

    def park(self, worker_id: str, reason: str, epoch: int | None) -> None:
        self._request(worker_id, "drain", reason, epoch, True)

    def resume(self, worker_id: str, reason: str, epoch: int | None) -> None:
        self._request(worker_id, "request_resume", reason, epoch)

    def retire(self, worker_id: str, reason: str, epoch: int | None) -> None:
        self._request(worker_id, "request_retire", reason, epoch)

    def _request(self, worker_id: str, method: str, *args: Any) -> None:
        """One request to the lifecycle of `worker_id`, waited for at most `_DRAIN_CALL_TIMEOUT_S`."""
        self.ensure(worker_id)
        try:
            ray.get(getattr(self._handles[worker_id], method).remote(*args), timeout=_DRAIN_CALL_TIMEOUT_S)
        except RayActorError:
            # The cached handle's actor is gone for good: forget it, so the next ensure() re-attaches
            # by name or creates a new lifecycle for the still-live row (never two: get_if_exists).
            with self._lock:
                self._handles.pop(worker_id, None)
            raise

    def keep_only(self, worker_ids: set[str]) -> None:
        """Forget handles of workers that are no longer live (their actors end themselves)."""
        with self._lock:
            for gone in set(self._handles) - worker_ids:
                del self._handles[gone]
