"""The Scaler's pod create calls, made off its cycle thread, and the lifecycle directory it hands them to.

Why the Scaler makes the create call at all is in actors/scaler.py's module docstring. The
`Provisioner` runs them in a small thread pool; once a create returned (or failed) it asks the
`LifecycleDirectory` for the worker's lifecycle, which owns the pod from then on. The directory is
injected: actors/directory.py's `RayLifecycles` (wired in actors/remote.py) in production, a fake
in tests. Nothing here imports Ray.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from typing import Protocol

from actors import _telemetry
from actors import lifecycle as lifecycle_mod
from cloud import base as cloud
from config.settings import OrchestratorSettings
from store import base as store_base

__all__ = ["LifecycleDirectory", "Provisioner"]

logger = logging.getLogger(__name__)

# Pod create calls in flight at once (RunPod's take seconds; a scale-up of a few pods is parallel).
_PROVISION_THREADS = 4


class LifecycleDirectory(Protocol):
    """What the Scaler needs of the WorkerLifecycles: one per live worker, never two."""

    def __len__(self) -> int: ...

    def ensure(self, worker_id: str) -> None:
        """The lifecycle of `worker_id` exists: re-attached if it runs, created if not (never two)."""
        ...

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None:
        """Ask the lifecycle of `worker_id` to drain its worker (fenced by `epoch`); raises on failure."""
        ...

    def park(self, worker_id: str, reason: str, epoch: int | None) -> None:
        """Drain it like `drain`, then stop its pod for the warm pool instead of terminating it."""
        ...

    def resume(self, worker_id: str, reason: str, epoch: int | None) -> None:
        """Ask the lifecycle of a stopped worker to resume its pod (fenced by `epoch`); raises on failure."""
        ...

    def retire(self, worker_id: str, reason: str, epoch: int | None) -> None:
        """Ask the lifecycle of a stopped worker to terminate its pod (it leaves the warm pool; fenced by
        `epoch`); raises on failure."""
        ...

    def keep_only(self, worker_ids: set[str]) -> None:
        """Forget the lifecycles of workers that are no longer live (their actors end themselves)."""
        ...


class Provisioner:
    """Pod create calls for rows the Scaler just wrote, off the cycle thread; then the lifecycle.

    A failed create is logged and counted, nothing more: the lifecycle started after it calls create
    again and records the provider's error (spawn_error), as it always did.
    """

    def __init__(
        self,
        settings: OrchestratorSettings,
        store: store_base.Store,
        provider: cloud.Provider,
        lifecycles: LifecycleDirectory,
    ) -> None:
        self._settings = settings
        self._store = store
        self._provider = provider
        self._lifecycles = lifecycles
        self._pool = futures.ThreadPoolExecutor(max_workers=_PROVISION_THREADS, thread_name_prefix="provision")
        self._lock = threading.Lock()
        self._in_flight: dict[str, futures.Future[None]] = {}

    def in_flight(self) -> set[str]:
        with self._lock:
            return set(self._in_flight)

    def submit(self, worker_id: str, traceparent: str | None) -> None:
        with self._lock:
            self._in_flight[worker_id] = self._pool.submit(self._provision, worker_id, traceparent)

    def wait(self, timeout_s: float) -> None:
        """Until the create calls in flight have returned (or `timeout_s`)."""
        with self._lock:
            pending = list(self._in_flight.values())
        futures.wait(pending, timeout=timeout_s)

    def _provision(self, worker_id: str, traceparent: str | None) -> None:
        try:
            # The same trace calls as the lifecycle's own provision (see lifecycle.provision_pod):
            # the provision span covers the create call and ends when `boot` begins. That `boot`
            # span is only the hand-off here (never ended, so never exported); the lifecycle opens
            # the real one when it sees the pod id on the row.
            trace = _telemetry.lifecycle_trace(traceparent, worker_id)
            trace.begin_phase("provision")
            lifecycle_mod.provision_pod(self._settings, self._store, self._provider, worker_id, traceparent, trace)
        except cloud.ProviderError as exc:
            _telemetry.record_error("provisioner", "create_failed")
            logger.warning("create of %s failed (%s); its lifecycle retries and records the error", worker_id, exc)
        except Exception:
            _telemetry.record_error("provisioner", "create_crashed")
            logger.exception("create of %s failed; its lifecycle retries", worker_id)
        finally:
            with self._lock:
                self._in_flight.pop(worker_id, None)
            try:
                self._lifecycles.ensure(worker_id)
            except Exception:  # the next cycle's sync tries again
                _telemetry.record_error("provisioner", "lifecycle_ensure")
                logger.exception("could not create the lifecycle of %s", worker_id)
