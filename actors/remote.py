"""The one place where the plain actor classes become Ray actors (STYLE.md 7).

The classes in actors/*.py are plain Python and can be unit-tested without Ray; this module adds
the Ray options (names, restarts, concurrency groups) and nothing else.
"""

from __future__ import annotations

import socket
from typing import Any

import ray

from actors import lifecycle as _lifecycle
from actors import names
from actors import scaler as _scaler
from config.settings import OrchestratorSettings

# --- Scaler and WorkerLifecycle (actors engineer) ---------------------------------------------

# Health probes and status go to their own group, so they answer while the default group is busy.
_CONCURRENCY_GROUPS = {"health": 2}


class _AnswersWhileBusy:
    """status, health and pid run in their own concurrency group: they answer while a slow
    cycle or step holds the main one (a probe needs an answer, not a queue position)."""

    @ray.method(concurrency_group="health")
    def status(self) -> dict[str, Any]:
        return super().status()  # type: ignore[misc, no-any-return]

    @ray.method(concurrency_group="health")
    def health(self) -> bool:
        return super().health()  # type: ignore[misc, no-any-return]

    @ray.method(concurrency_group="health")
    def pid(self) -> int:
        return super().pid()  # type: ignore[misc, no-any-return]


class Scaler(_AnswersWhileBusy, _scaler.Scaler):
    """The Scaler with its Ray method options (the loop runs in a thread started by __init__)."""


class WorkerLifecycle(_AnswersWhileBusy, _lifecycle.WorkerLifecycle):
    """The WorkerLifecycle with its Ray method options."""


ScalerActor = ray.remote(
    num_cpus=0,
    max_restarts=-1,  # a SIGKILLed Scaler comes back; __init__ restarts its loop from the database
    max_task_retries=0,  # never replay a call on the restarted process
    max_concurrency=4,
    concurrency_groups=_CONCURRENCY_GROUPS,
)(Scaler)

WorkerLifecycleActor = ray.remote(
    num_cpus=0,
    max_restarts=-1,  # a SIGKILLed lifecycle comes back and resumes from its worker row
    max_task_retries=0,
    max_concurrency=4,
    concurrency_groups=_CONCURRENCY_GROUPS,
    # No runtime_env here: any runtime_env makes Ray start a dedicated worker process for the actor
    # instead of taking an idle one. (A LocalProvider pod must outlive the process that created it;
    # it does because cloud/local.py detaches it, not by turning off Ray's child-process clean-up.)
)(WorkerLifecycle)


def scaler_holder(name: str = names.SCALER_NAME) -> str:
    """The lease holder id of the Scaler `name` on this Ray cluster: stable across actor restarts."""
    return f"{socket.gethostname()}/{ray.get_runtime_context().gcs_address}/{name}"


def get_or_create_scaler(
    settings: OrchestratorSettings, *, name: str = names.SCALER_NAME, **kwargs: Any
) -> ray.actor.ActorHandle:
    """The cluster's Scaler: re-attached when it exists, else created (detached). Never two."""
    return ScalerActor.options(
        name=name, namespace=settings.ray.namespace, lifetime="detached", get_if_exists=True
    ).remote(settings, holder=kwargs.pop("holder", None) or scaler_holder(name), name=name, **kwargs)


def get_or_create_lifecycle(worker_id: str, settings: OrchestratorSettings, **kwargs: Any) -> ray.actor.ActorHandle:
    """The WorkerLifecycle `worker:<id>`: re-attached when it exists, else created (detached)."""
    return WorkerLifecycleActor.options(
        name=names.worker_actor_name(worker_id),
        namespace=settings.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(worker_id, settings, **kwargs)


def find_actor(name: str, namespace: str) -> ray.actor.ActorHandle | None:
    """A named actor's handle, or None when it does not exist."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


# --- LogShipper (telemetry engineer) ----------------------------------------------------------

from actors import log_shipper as _log_shipper  # noqa: E402

# `health` answers while a flush hangs; `control` (flush_now) never waits behind a ship call.
_LOG_SHIPPER_GROUPS = {"health": 1, "control": 1}


class LogShipper(_log_shipper.LogShipper):
    """The LogShipper with its Ray method options; ship/ship_packed run in the default group."""

    @ray.method(concurrency_group="health")
    def health(self) -> dict[str, Any]:
        return super().health()

    @ray.method(concurrency_group="health")
    def getpid(self) -> int:
        return super().getpid()

    @ray.method(concurrency_group="control")
    def flush_now(self, timeout: float = 10.0) -> dict[str, Any]:
        return super().flush_now(timeout)


LogShipperActor = ray.remote(
    num_cpus=0,
    max_restarts=-1,  # a SIGKILLed or probe-killed LogShipper comes back and replays its spool
    max_task_retries=-1,  # ship calls are replayed on the new process: the spool and LogRecord.id dedupe
    concurrency_groups=_LOG_SHIPPER_GROUPS,
)(LogShipper)


def _absolute_log_paths(settings: OrchestratorSettings) -> OrchestratorSettings:
    """Spool, fallback and dead-letter paths resolved here, so the actor's working directory does not matter."""
    shipping = settings.log_shipping
    resolved = shipping.model_copy(
        update={
            "spool_dir": shipping.spool_dir.expanduser().resolve(),
            "fallback_file": shipping.fallback_file.expanduser().resolve(),
            "dead_letter_file": shipping.dead_letter_file.expanduser().resolve(),
        }
    )
    return settings.model_copy(update={"log_shipping": resolved})


def get_or_create_log_shipper(settings: OrchestratorSettings) -> ray.actor.ActorHandle:
    """The cluster's LogShipper (`log-shipper`, detached): re-attached when it exists, else created."""
    return LogShipperActor.options(
        name=names.LOG_SHIPPER_NAME,
        namespace=settings.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
    ).remote(_absolute_log_paths(settings))
