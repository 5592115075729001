"""The one place where the plain actor classes become Ray actors (STYLE.md 7).

The classes in actors/*.py are plain Python and can be unit-tested without Ray; this module adds
the Ray options (names, restarts, concurrency groups, placement) and the Ray wiring the plain
classes are given: the Scaler's WorkerLifecycle directory (`lifecycle_directory`), its LogShipper
probe, and the lifecycles' store and provider through the StoreGateway (`gateway_store`,
`gateway_provider`).

Placement (README, "Scaling out"): each WorkerLifecycle asks one unit of the custom resource
`ray.lifecycle_resource` (a node's amount is its lifecycle slots; demand beyond them is what makes
the Ray autoscaler add a node, and an idle node is what lets it remove one); the Scaler, the
LogShipper and the StoreGateway ask a sliver of the head node's own resource
(`node:__internal_head__`), so they never land on a node the autoscaler may take away. A cluster
where no node advertises the lifecycle resource (a bare `ray start --head`) still runs the
lifecycles, anywhere, with a warning: an actor asking for a resource nobody has would wait forever.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import ray
from ray.actor import ActorClass, ActorHandle

from actors import _telemetry, directory, names
from actors import lifecycle as _lifecycle
from actors import store_gateway as _store_gateway
from cloud import base as cloud
from config.settings import OrchestratorSettings
from store import base as store_base
from telemetry import shipper_health

if TYPE_CHECKING:
    from actors import log_shipper as _log_shipper
    from actors import scaler as _scaler

_F = TypeVar("_F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)


def _in_group(group: str) -> Callable[[_F], _F]:
    """`ray.method(concurrency_group=group)`, typed as what it is: the method itself, with an option."""
    return cast(Callable[[_F], _F], ray.method(concurrency_group=group))


def where() -> dict[str, Any]:
    """This actor's process and Ray node (which node a lifecycle runs on after a node loss)."""
    return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


# --- Scaler and WorkerLifecycle ----------------------------------------------------------------

# Health probes and status go to their own group, so they answer while the default group is busy:
# status, health and pid of the Scaler and of a WorkerLifecycle run there, so a probe gets an
# answer, not a queue position, while a slow cycle or step holds the main group.
_CONCURRENCY_GROUPS = {"health": 2}


def _stop_cleanly_on_sigterm(scaler: _scaler.Scaler) -> None:
    """SIGTERM of the Scaler's process (`ray stop`, a node shutting down, a `kill`) is a clean stop:
    the Scaler stops (lease given up, the stop recorded for `explain`), then Ray's own handler exits.

    Ray runs an actor's `__init__` on its process's main thread, where handlers are installed; Ray's
    handler (SystemExit) is kept and called after ours.
    """
    if threading.current_thread() is not threading.main_thread():
        logger.warning("the Scaler is not on its process's main thread: a SIGTERM will not be recorded as a stop")
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        scaler.stop("SIGTERM: the Scaler's process was asked to exit")
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)


# What a WorkerLifecycle's process never imports (tests and bench/fleet_scale.py ask `loaded_modules`):
# the database drivers and the RunPod SDK (the StoreGateway makes those calls), pydantic-settings and
# python-dotenv (settings are built by the Scaler, only unpickled here: config/_environment.py), and
# the OTLP exporters (imported only when an endpoint is configured: telemetry/tracing.py).
NOT_IN_A_LIFECYCLE = (
    "psycopg",
    "psycopg_pool",
    "runpod",
    "supabase",
    "pydantic_settings",
    "dotenv",
    "opentelemetry.exporter",
)


class WorkerLifecycle(_lifecycle.WorkerLifecycle):
    """The WorkerLifecycle with its Ray method options and its Ray wiring: the StoreGateway's store and
    shared pod reads (`gateway_store`, `gateway_provider`) unless a test injects factories of its own."""

    def __init__(self, worker_id: str, settings: OrchestratorSettings, **kwargs: Any) -> None:
        kwargs.setdefault("store_factory", gateway_store)
        kwargs.setdefault("provider_factory", gateway_provider)
        super().__init__(worker_id, settings, **kwargs)
        _release_freed_heap()

    def step(self) -> None:
        try:
            super().step()
        finally:
            _release_freed_heap()  # in the loop's own thread, once a poll: no thread of its own

    @_in_group("health")
    def loaded_modules(self, names: list[str]) -> list[str]:
        """Which of these top-level modules this process has imported (what a lifecycle costs)."""
        return sorted(name for name in names if name in sys.modules)

    @_in_group("health")
    def status(self) -> dict[str, Any]:
        return super().status()

    @_in_group("health")
    def health(self) -> dict[str, Any]:
        return super().health()

    @_in_group("health")
    def pid(self) -> int:
        return super().pid()

    @_in_group("health")
    def where(self) -> dict[str, Any]:
        return where()


_SCALER_OPTIONS: dict[str, Any] = {
    "num_cpus": 0,
    "max_restarts": -1,  # a SIGKILLed Scaler comes back; __init__ restarts its loop from the database
    "max_task_retries": 0,  # never replay a call on the restarted process
    "max_concurrency": 4,
    "concurrency_groups": _CONCURRENCY_GROUPS,
}


def _build_scaler() -> dict[str, Any]:
    """The Scaler's Ray class (see `__getattr__`: built on first use, never in a lifecycle's process)."""
    from actors import scaler as _scaler

    class Scaler(_scaler.Scaler):
        """The Scaler with its Ray method options and its Ray wiring (the loop runs in a thread started by __init__).

        `probe_log_shipper=False` leaves the LogShipper unprobed (tests that run without one).
        """

        def __init__(self, settings: OrchestratorSettings, *, probe_log_shipper: bool = True, **kwargs: Any) -> None:
            super().__init__(
                settings,
                lifecycles=lifecycle_directory(settings),
                shipper_probe=functools.partial(probe_log_shipper_once, settings) if probe_log_shipper else None,
                **kwargs,
            )
            _stop_cleanly_on_sigterm(self)

        @_in_group("health")
        def status(self) -> dict[str, Any]:
            return super().status()

        @_in_group("health")
        def health(self) -> dict[str, Any]:
            return super().health()

        @_in_group("health")
        def pid(self) -> int:
            return super().pid()

        @_in_group("health")
        def where(self) -> dict[str, Any]:
            return where()

    return {"Scaler": Scaler, "ScalerActor": ray.remote(**_SCALER_OPTIONS)(Scaler)}


# A lifecycle's process frees most of what its start-up and each step allocate (imports, rows read,
# spans) but glibc keeps the freed heap; handing it back after start-up and after every step is
# ~1 MiB less USS per lifecycle (a trim of a heap this size takes well under a millisecond).
@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """This process's C library's malloc_trim (glibc), or None elsewhere."""
    trim: Callable[[int], int] | None = getattr(ctypes.CDLL(None), "malloc_trim", None)
    return trim


def _release_freed_heap() -> None:
    """malloc_trim(0): freed heap pages back to the system (glibc only; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_LIFECYCLE_OPTIONS: dict[str, Any] = {
    "num_cpus": 0,
    "max_restarts": -1,  # a SIGKILLed lifecycle comes back and resumes from its worker row
    "max_task_retries": 0,
    "max_concurrency": 4,
    "concurrency_groups": _CONCURRENCY_GROUPS,
    # No runtime_env here: any runtime_env makes Ray start a dedicated worker process for the actor
    # instead of taking an idle one. (A LocalProvider pod must outlive the process that created it;
    # it does because cloud/local.py detaches it, not by turning off Ray's child-process clean-up.)
}
WorkerLifecycleActor: ActorClass[WorkerLifecycle] = ray.remote(**_LIFECYCLE_OPTIONS)(WorkerLifecycle)


# The head node's own resource (Ray gives the head 1 unit); a sliver of it pins an actor to the head.
HEAD_NODE_RESOURCE = "node:__internal_head__"
_HEAD_SLIVER = 0.001
# How long a process trusts its last look at the cluster's resources (the lifecycle slot check).
_RESOURCE_CHECK_TTL_S = 30.0
_resource_seen: dict[str, tuple[float, bool]] = {}
_resource_lock = threading.Lock()


def control_placement(settings: OrchestratorSettings) -> dict[str, Any]:
    """Ray options that put a control actor (Scaler, LogShipper, StoreGateway) on the head node."""
    return {"resources": {HEAD_NODE_RESOURCE: _HEAD_SLIVER}} if settings.ray.control_on_head else {}


def _cluster_offers(resource: str) -> bool:
    """Whether some node of the cluster advertises `resource` (looked at once per _RESOURCE_CHECK_TTL_S;
    each look that finds none is one WARNING and one count of orchestrator_errors)."""
    now = time.monotonic()
    with _resource_lock:
        seen = _resource_seen.get(resource)
        if seen is not None and now - seen[0] < _RESOURCE_CHECK_TTL_S:
            return seen[1]
    totals: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    offered = totals.get(resource, 0) > 0
    with _resource_lock:
        _resource_seen[resource] = (now, offered)
    if not offered:
        _telemetry.record_error("lifecycle_placement", "no_lifecycle_slots")
        logger.warning(
            "no Ray node advertises the resource %r (lifecycle slots): WorkerLifecycles go to any node; start "
            "Ray with --resources='{\"%s\": N}' (ray_cluster.yaml's nodes do) or set ray.lifecycle_resource: ''",
            resource,
            resource,
        )
    return offered


def lifecycle_placement(settings: OrchestratorSettings) -> dict[str, Any]:
    """Ray options of a WorkerLifecycle: one lifecycle slot (`ray.lifecycle_resource`) when the cluster has any."""
    resource = settings.ray.lifecycle_resource
    if not resource or not _cluster_offers(resource):
        return {}
    # SPREAD: a node's loss takes the fewest lifecycles with it (and restarts them on the rest);
    # Ray's default packs actors that ask no CPU onto one node.
    return {"resources": {resource: 1}, "scheduling_strategy": "SPREAD"}


def scaler_holder(name: str = names.SCALER_NAME) -> str:
    """The lease lineage of the Scaler `name` on this Ray cluster: stable across actor restarts (each
    incarnation adds its own id to it, see actors/scaler.py, "Identity")."""
    return f"{socket.gethostname()}/{ray.get_runtime_context().gcs_address}/{name}"


def get_or_create_scaler(
    settings: OrchestratorSettings, *, name: str = names.SCALER_NAME, **kwargs: Any
) -> ActorHandle[_scaler.Scaler]:
    """The cluster's Scaler: re-attached when it exists, else created (detached). Never two."""
    handle = (
        _actor_class("ScalerActor")
        .options(
            name=name,
            namespace=settings.ray.namespace,
            lifetime="detached",
            get_if_exists=True,
            **control_placement(settings),
        )
        .remote(settings, holder=kwargs.pop("holder", None) or scaler_holder(name), name=name, **kwargs)
    )
    return cast("ActorHandle[_scaler.Scaler]", handle)


def get_or_create_lifecycle(
    worker_id: str, settings: OrchestratorSettings, **kwargs: Any
) -> ActorHandle[WorkerLifecycle]:
    """The WorkerLifecycle `worker:<id>`: re-attached when it exists, else created (detached)."""
    handle = WorkerLifecycleActor.options(
        name=names.worker_actor_name(worker_id),
        namespace=settings.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
        **lifecycle_placement(settings),
    ).remote(worker_id, settings, **kwargs)
    return cast(ActorHandle[WorkerLifecycle], handle)  # Ray's stub also allows the class itself


def lifecycle_directory(settings: OrchestratorSettings) -> directory.RayLifecycles:
    """The Scaler's directory of WorkerLifecycle actors, attaching by name with `get_or_create_lifecycle`."""
    return directory.RayLifecycles(functools.partial(get_or_create_lifecycle, settings=settings))


def find_actor(name: str, namespace: str) -> ActorHandle[Any] | None:
    """A named actor's handle, or None when it does not exist."""
    try:
        handle: ActorHandle[Any] = ray.get_actor(name, namespace=namespace)
    except ValueError:  # no actor of that name: an answer, not an error
        return None
    return handle


# --- LogShipper --------------------------------------------------------------------------------

# `health` answers while a flush hangs; `control` (flush_now) never waits behind a ship call.
_LOG_SHIPPER_GROUPS = {"health": 1, "control": 1}


_LOG_SHIPPER_OPTIONS: dict[str, Any] = {
    "num_cpus": 0,
    "max_restarts": -1,  # a SIGKILLed or probe-killed LogShipper comes back and replays its spool
    "max_task_retries": -1,  # ship calls are replayed on the new process: the spool and LogRecord.id dedupe
    "concurrency_groups": _LOG_SHIPPER_GROUPS,
}


def _build_log_shipper() -> dict[str, Any]:
    """The LogShipper's Ray class (see `__getattr__`: built on first use, never in a lifecycle's process)."""
    from actors import log_shipper as _log_shipper

    class LogShipper(_log_shipper.LogShipper):
        """The LogShipper with its Ray method options; ship/ship_packed run in the default group."""

        @_in_group("health")
        def health(self) -> dict[str, Any]:
            return super().health()

        @_in_group("health")
        def getpid(self) -> int:
            return super().getpid()

        @_in_group("control")
        def flush_now(self, timeout: float = 10.0) -> dict[str, Any]:
            return super().flush_now(timeout)

    return {"LogShipper": LogShipper, "LogShipperActor": ray.remote(**_LOG_SHIPPER_OPTIONS)(LogShipper)}


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


def get_or_create_log_shipper(settings: OrchestratorSettings) -> ActorHandle[_log_shipper.LogShipper]:
    """The cluster's LogShipper (`log-shipper`, detached): re-attached when it exists, else created."""
    handle = (
        _actor_class("LogShipperActor")
        .options(
            name=names.LOG_SHIPPER_NAME,
            namespace=settings.ray.namespace,
            lifetime="detached",
            get_if_exists=True,
            **control_placement(settings),
        )
        .remote(_absolute_log_paths(settings))
    )
    return cast("ActorHandle[_log_shipper.LogShipper]", handle)


def probe_log_shipper_once(settings: OrchestratorSettings) -> shipper_health.Verdict:
    """The Scaler's probe: the LogShipper's health, restarted through Ray when stuck (created if missing)."""
    return shipper_health.probe_and_heal(get_or_create_log_shipper(settings), settings)


# --- StoreGateway ------------------------------------------------------------------------------


class StoreGateway(_store_gateway.StoreGateway):
    """The StoreGateway with its Ray method options; store calls run in the default group."""

    @_in_group("health")
    def status(self) -> dict[str, Any]:
        return super().status()

    @_in_group("health")
    def health(self) -> dict[str, Any]:
        return super().health()

    @_in_group("health")
    def pid(self) -> int:
        return super().pid()

    @_in_group("health")
    def where(self) -> dict[str, Any]:
        return where()


_GATEWAY_OPTIONS: dict[str, Any] = {
    "num_cpus": 0,
    "max_restarts": -1,  # a SIGKILLed gateway comes back; lifecycles re-open their entry on the next call
    "max_task_retries": 0,  # a store call in flight is never replayed: the caller's next step re-reads
    # Calls served at once (they wait for one of the pool's connections); a lifecycle makes one at a time.
    "max_concurrency": 32,
    "concurrency_groups": {"health": 1},
}
StoreGatewayActor: ActorClass[StoreGateway] = ray.remote(**_GATEWAY_OPTIONS)(StoreGateway)

# A gateway call waiting longer than this is given up (the lifecycle's step fails and runs again).
_GATEWAY_CALL_TIMEOUT_S = 120.0


def get_or_create_store_gateway(settings: OrchestratorSettings) -> ActorHandle[StoreGateway]:
    """The namespace's StoreGateway (`store-gateway`, detached, on the head): re-attached or created."""
    handle = StoreGatewayActor.options(
        name=names.STORE_GATEWAY_NAME,
        namespace=settings.ray.namespace,
        lifetime="detached",
        get_if_exists=True,
        **control_placement(settings),
    ).remote()
    return cast(ActorHandle[StoreGateway], handle)  # Ray's stub also allows the class itself


def gateway_caller(settings: OrchestratorSettings) -> _store_gateway.GatewayCall:
    """Calls of the StoreGateway from this process: the gateway's own exception re-raised as itself,
    an unreachable gateway as GatewayUnavailable (the handle is looked up again on the next call)."""
    handles: list[ActorHandle[StoreGateway]] = []

    def call(method: str, args: tuple[Any, ...]) -> Any:
        if not handles:
            handles.append(get_or_create_store_gateway(settings))
        try:
            return ray.get(getattr(handles[0], method).remote(*args), timeout=_GATEWAY_CALL_TIMEOUT_S)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            handles.clear()
            raise _store_gateway.GatewayUnavailable(
                f"store gateway: {method} failed: {type(exc).__name__} (restarting or its node is gone)"
            ) from None

    return call


def gateway_store(settings: OrchestratorSettings) -> store_base.Store:
    """A WorkerLifecycle's store: every call through the StoreGateway (no pool, no driver in the lifecycle)."""
    return _store_gateway.gateway_store(settings, gateway_caller(settings))


def gateway_provider(settings: OrchestratorSettings) -> cloud.Provider:
    """A WorkerLifecycle's provider: reads from the gateway's shared pod list, its own creates and terminates."""
    return _store_gateway.GatewayProvider(settings, gateway_caller(settings))


# --- built on first use -------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "Scaler": _build_scaler,
    "ScalerActor": _build_scaler,
    "LogShipper": _build_log_shipper,
    "LogShipperActor": _build_log_shipper,
}
_build_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """`Scaler`, `ScalerActor`, `LogShipper`, `LogShipperActor`: built on first use (PEP 562).

    A WorkerLifecycle's process imports this module for its own Ray class; building the Scaler's
    and the LogShipper's only when asked keeps their code (~1 MiB per process) out of every
    lifecycle. Built once and kept as module attributes, so Ray pickles them by reference as before.
    """
    builder = _BUILDERS.get(name)
    if builder is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _build_lock:
        if name not in globals():
            for attr, value in builder().items():
                if isinstance(value, type):
                    value.__module__, value.__qualname__ = __name__, attr
                globals()[attr] = value
    return globals()[name]


def _actor_class(name: str) -> ActorClass[Any]:
    return cast(ActorClass[Any], __getattr__(name))
