"""StoreGateway: the database of every WorkerLifecycle through one small pool (made a Ray actor in remote.py).

Why: one WorkerLifecycle per pod is the product's shape, and a pool per lifecycle made the
connections grow with the fleet (100 pods, 100+ connections, a Supabase project allows a few dozen
to a few hundred, shared with the app and every pod's worker). Here every lifecycle's store call is
one call to this actor, which holds `database.gateway_pool_size` connections whatever the fleet's
size. Each call returns only after the store method returned, so a transition is committed before
the lifecycle acts on it, exactly as with a store of its own.

The lifecycle does not know: `GatewayStore` implements the Store protocol by forwarding any public
method by name (store methods added later keep working), and `GatewayProvider` is a Provider whose
reads (`get`, `list`) are answered from one shared pod list that this actor refreshes at most every
`pod_list_max_age_s` instead of one provider call per lifecycle per step (1,000 lifecycles polling
RunPod every 10 s would be 100 requests/s against its rate limits). A lifecycle that creates or
terminates a pod itself (rare: the Scaler makes the create call) builds its real provider then, and
reads that pod directly from then on, so it sees its own act at once. Until then a lifecycle imports
neither a database driver nor the `runpod` SDK: ~50 MiB per lifecycle instead of ~79.

One gateway serves every database it is asked for (entries by `gateway_key`, opened on first use,
closed after `idle_close_s` without a call): several orchestrators or test databases in one Ray
namespace share the process, not the connections. It is restarted by Ray when it dies
(max_restarts=-1) and re-opens an entry on the next call; a call in flight at that moment fails,
and the lifecycle's step tries again at its next poll, reading the row afresh (a transition is a
compare-and-set, so a write that did commit is seen, never repeated over a newer state).

The clock: `now()` is the database's, read through the gateway once per `_CLOCK_RESYNC_S` and then
kept as an offset to this process's monotonic clock, which halves the calls of a lifecycle's step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from actors import _telemetry
from cloud import base as cloud
from config.settings import OrchestratorSettings
from store import base as store_base

__all__ = [
    "GatewayProvider",
    "GatewayStore",
    "StoreGateway",
    "UnknownGatewayKey",
    "gateway_key",
]

logger = logging.getLogger(__name__)

# How the gateway opens a store and a provider for an entry (tests inject; `_open_*` otherwise).
StoreOpener = Callable[[OrchestratorSettings, int], store_base.Store]
ProviderOpener = Callable[[OrchestratorSettings], cloud.Provider]
# The Ray call of the gateway: (method of the gateway, positional args) -> its return value, raising
# the gateway's own exception (RayTaskError unwrapped) or GatewayUnavailable.
GatewayCall = Callable[[str, tuple[Any, ...]], Any]

# An entry nobody called for this long is closed (its connections released); opened again on use.
DEFAULT_IDLE_CLOSE_S = 120.0
# The database clock is re-read through the gateway this often; in between it is an offset.
_CLOCK_RESYNC_S = 30.0
# A shared pod list older than this is refreshed before it answers (capped; see pod_list_max_age_s).
_POD_LIST_MAX_AGE_CAP_S = 5.0
# Store methods never forwarded: the proxy's own, and the LISTEN wait (it would hold a gateway thread).
_NOT_FORWARDED = frozenset({"close", "pool", "wait_for_task_change"})


class UnknownGatewayKey(store_base.StoreError):
    """The gateway has no entry for this key (it was restarted or closed the entry): open it again."""


class GatewayUnavailable(store_base.DatabaseUnavailable):
    """The gateway actor could not be reached (restarting, or its node is gone); try again later."""


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


def pod_list_max_age_s(settings: OrchestratorSettings) -> float:
    """How stale the shared pod list may be: half a lifecycle's poll period, at most 5 s."""
    poll_s = min(settings.scaling.heartbeat_interval_s, settings.scaling.cycle_interval_s)
    return min(poll_s / 2, _POD_LIST_MAX_AGE_CAP_S)


def gateway_key(settings: OrchestratorSettings) -> str:
    """What an entry of the gateway is: the database, the queue profile and the provider's reads.

    A digest (the values include secrets, the key never shows them); equal settings give equal keys
    in every process.
    """
    db, pv = settings.database, settings.provider
    parts = [
        db.backend.value,
        _secret(db.url),
        db.supabase_url or "",
        _secret(db.supabase_service_role_key),
        str(db.embedded_dir),
        db.gateway_pool_size,
        db.connect_timeout_s,
        db.request_retries,
        settings.queue.profile.value,
        settings.queue.new_task_probe_s,
        pv.kind.value,
        _secret(pv.runpod_api_key),
        str(pv.runpod_api_base_url),
        pv.name_prefix,
        str(settings.state_dir),
        pod_list_max_age_s(settings),
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def _open_store(settings: OrchestratorSettings, pool_size: int) -> store_base.Store:
    from store import factory as stores

    return stores.open_store(settings, pool_max_size=pool_size)


def _open_provider(settings: OrchestratorSettings) -> cloud.Provider:
    from cloud import factory as providers

    return providers.make_provider(settings)


@dataclass
class _PodList:
    """The shared answer to `list(name_prefix)`, and when it was taken (monotonic)."""

    by_id: dict[str, cloud.Pod] = field(default_factory=dict)
    taken_at: float = float("-inf")


class _Entry:
    """One database (and provider) the gateway serves: opened lazily, closed when idle."""

    def __init__(self, settings: OrchestratorSettings, open_store: StoreOpener, open_provider: ProviderOpener) -> None:
        self.settings = settings
        self.last_used = time.monotonic()
        self.calls = 0
        self._open_store = open_store
        self._open_provider = open_provider
        self._store: store_base.Store | None = None
        self._provider: cloud.Provider | None = None
        self._lock = threading.Lock()  # opening and closing
        self._list_lock = threading.Lock()  # one pod list refresh at a time
        self._pods = _PodList()
        self._max_age_s = pod_list_max_age_s(settings)

    def store(self) -> store_base.Store:
        with self._lock:
            if self._store is None:
                self._store = self._open_store(self.settings, self.settings.database.gateway_pool_size)
            return self._store

    def provider(self) -> cloud.Provider:
        with self._lock:
            if self._provider is None:
                self._provider = self._open_provider(self.settings)
            return self._provider

    def pods(self) -> _PodList:
        """The shared pod list, refreshed when older than its max age (one refresh at a time)."""
        with self._list_lock:
            if time.monotonic() - self._pods.taken_at > self._max_age_s:
                started = time.monotonic()
                listed = self.provider().list(self.settings.provider.name_prefix)
                self._pods = _PodList({p.id: p for p in listed}, started)
            return self._pods

    def close(self) -> None:
        with self._lock:
            opened = [("store", self._store), ("provider", self._provider)]
            self._store = self._provider = None
        for what, thing in opened:
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as exc:  # closing an idle entry; its connections die with the process anyway
                _telemetry.record_error("store_gateway", f"close_{what}")
                logger.warning("closing the gateway's %s failed: %s: %s", what, type(exc).__name__, exc)


class StoreGateway:
    """The store (and the pod list) of every WorkerLifecycle: see the module docstring."""

    def __init__(
        self,
        *,
        store_opener: StoreOpener | None = None,
        provider_opener: ProviderOpener | None = None,
        idle_close_s: float = DEFAULT_IDLE_CLOSE_S,
        start: bool = True,
    ) -> None:
        self._store_opener = store_opener or _open_store
        self._provider_opener = provider_opener or _open_provider
        self._idle_close_s = idle_close_s
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started_at = time.time()
        self._calls = 0
        self._errors = 0
        self._last_error: str | None = None
        self._closed_idle = 0
        self._reaper: threading.Thread | None = None
        if start:
            self._reaper = threading.Thread(target=self._close_idle_loop, name="gateway-idle", daemon=True)
            self._reaper.start()

    def __repr__(self) -> str:
        return f"StoreGateway({len(self._entries)} entries)"

    # --- called through Ray ---------------------------------------------------------------------
    def open(self, key: str, settings: OrchestratorSettings) -> None:
        """Serve `settings`' database under `key` (idempotent; the store opens on first call)."""
        if key != gateway_key(settings):
            raise ValueError("gateway key does not match the settings it was opened with")
        with self._lock:
            if key not in self._entries:
                self._entries[key] = _Entry(settings, self._store_opener, self._provider_opener)
                logger.info("store gateway: serving %s (%d entries)", key, len(self._entries))

    def call(self, key: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """`store.<method>(*args, **kwargs)` on the entry's store; returns after the store returned."""
        if method.startswith("_") or method in _NOT_FORWARDED:
            raise AttributeError(f"the store gateway does not forward {method!r}")
        entry = self._entry(key)
        fn = getattr(entry.store(), method)
        return self._counted(method, fn, *args, **kwargs)

    def pod(self, key: str, pod_id: str) -> cloud.Pod:
        """`provider.get(pod_id)` answered from the shared pod list; a pod not on it is asked for."""
        entry = self._entry(key)
        found: cloud.Pod | None = self._counted("pod_list", entry.pods).by_id.get(pod_id)
        if found is not None:
            return found
        return cast(cloud.Pod, self._counted("pod_get", entry.provider().get, pod_id))

    def pods(self, key: str, name_prefix: str) -> list[cloud.Pod]:
        """`provider.list(name_prefix)`, from the shared pod list when the prefix is within it."""
        entry = self._entry(key)
        ours = entry.settings.provider.name_prefix
        if not name_prefix.startswith(ours):
            return cast(list[cloud.Pod], self._counted("pod_list", entry.provider().list, name_prefix))
        listed = self._counted("pod_list", entry.pods).by_id.values()
        return [p for p in listed if p.name.startswith(name_prefix)]

    def status(self) -> dict[str, Any]:
        with self._lock:
            at = time.monotonic()
            entries = {k: {"calls": e.calls, "idle_s": round(at - e.last_used, 1)} for k, e in self._entries.items()}
        return {
            "pid": os.getpid(),
            "entries": entries,
            "calls": self._calls,
            "errors": self._errors,
            "last_error": self._last_error,
            "closed_idle": self._closed_idle,
            "started_at": self._started_at,
        }

    def health(self) -> dict[str, Any]:
        """Facts: entries open, calls served, errors raised to callers (store errors are theirs to judge)."""
        report = self.status()
        alive = self._reaper is None or self._reaper.is_alive()
        report.update(
            ok=alive,
            verdict="ok" if alive else "stuck",
            summary=f"{len(report['entries'])} database(s) served, {report['calls']} calls, "
            f"{report['errors']} raised to callers" + ("" if alive else "; the idle closer died"),
        )
        return report

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        """Close every entry (tests, shutdown); the actor keeps answering and reopens on use."""
        self._stop.set()
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.close()

    # --- inside ---------------------------------------------------------------------------------
    def _entry(self, key: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                raise UnknownGatewayKey(f"store gateway has no entry {key}: open it first")
            entry.last_used = time.monotonic()
            entry.calls += 1
        return entry

    def _counted(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._calls += 1
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # raised to the caller, who handles it as from its own store
            self._errors += 1
            self._last_error = f"{what}: {type(exc).__name__}: {exc}"
            raise

    def close_idle(self, now: float | None = None) -> int:
        """Close the entries nobody called for `idle_close_s`; returns how many."""
        at = time.monotonic() if now is None else now
        with self._lock:
            idle = [k for k, e in self._entries.items() if at - e.last_used > self._idle_close_s]
            closing = [self._entries.pop(k) for k in idle]
        for entry in closing:
            entry.close()
        self._closed_idle += len(closing)
        if closing:
            logger.info("store gateway: closed %d idle entr%s", len(closing), "y" if len(closing) == 1 else "ies")
        return len(closing)

    def _close_idle_loop(self) -> None:
        while not self._stop.wait(min(self._idle_close_s / 2, 30.0)):
            try:
                self.close_idle()
            except Exception as exc:  # keep serving; the next round tries again
                _telemetry.record_error("store_gateway", "close_idle")
                logger.warning("store gateway: closing idle entries failed: %s: %s", type(exc).__name__, exc)


# --- the lifecycle's side ---------------------------------------------------------------------------


class GatewayStore:
    """A Store whose every method is the gateway's `call` of the same name (see the module docstring).

    `call` is the Ray call of the gateway (actors/remote.py builds it). The first call opens this
    settings' entry; an entry the gateway lost (restarted, closed when idle) is opened again and the
    call repeated once, which is safe: the gateway never ran it.
    """

    def __init__(self, settings: OrchestratorSettings, call: GatewayCall) -> None:
        self._settings = settings
        self._key = gateway_key(settings)
        self._gateway = call
        self._opened = False
        self._clock: tuple[datetime, float] | None = None  # (database time, monotonic) at the last read

    def __repr__(self) -> str:
        return f"GatewayStore({self._key})"

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name in _NOT_FORWARDED:
            raise AttributeError(name)

        def forwarded(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        forwarded.__name__ = name
        return forwarded

    def now(self) -> datetime:
        """The database's clock: read through the gateway every `_CLOCK_RESYNC_S`, an offset in between."""
        mono = time.monotonic()
        if self._clock is None or mono - self._clock[1] > _CLOCK_RESYNC_S:
            db_now = cast(datetime, self._call("now", (), {}))
            self._clock = (db_now, time.monotonic())
            return db_now
        db_then, mono_then = self._clock
        return (db_then + timedelta(seconds=mono - mono_then)).astimezone(UTC)

    def close(self) -> None:
        """Nothing of ours to close: the connections are the gateway's."""

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._opened:
            self._gateway("open", (self._key, self._settings))
            self._opened = True
        try:
            return self._gateway("call", (self._key, method, args, kwargs))
        except UnknownGatewayKey:
            self._gateway("open", (self._key, self._settings))
            return self._gateway("call", (self._key, method, args, kwargs))


def gateway_store(settings: OrchestratorSettings, call: GatewayCall) -> store_base.Store:
    """The GatewayStore as what it stands for: a Store (its methods are forwarded by name)."""
    return cast(store_base.Store, GatewayStore(settings, call))


class GatewayProvider:
    """A Provider whose reads come from the gateway's shared pod list and whose acts are this process's own.

    `get` and `list` go to the gateway, except right after this process acted on a pod itself
    (create, terminate, stop, resume: the real provider, built by `provider_factory` on first act):
    for twice the shared list's max age after an act its reads go to the real provider too, so a
    lifecycle sees the result of its own act at once, never an older list. After that the gateway's
    list began after the act, and reads go back to it: a pod stopped and resumed (the warm pool)
    lives on for hours, and its lifecycle must not poll the provider on its own all that time.
    """

    def __init__(
        self,
        settings: OrchestratorSettings,
        call: GatewayCall,
        provider_factory: ProviderOpener | None = None,
    ) -> None:
        self.name = settings.provider.kind.value
        self._settings = settings
        self._key = gateway_key(settings)
        self._gateway = call
        self._factory = provider_factory or _open_provider
        self._own: cloud.Provider | None = None
        self._opened = False
        # Reads go to the real provider until then (monotonic): see the class docstring.
        self._own_reads_s = 2 * pod_list_max_age_s(settings)
        self._own_reads_until = float("-inf")

    def __repr__(self) -> str:
        return f"GatewayProvider({self.name}, own={self._own is not None})"

    def create(self, name: str, spec: cloud.PodSpec) -> cloud.Pod:
        with self._acting() as provider:
            return provider.create(name, spec)

    def terminate(self, pod_id: str) -> None:
        with self._acting() as provider:
            provider.terminate(pod_id)

    def stop(self, pod_id: str) -> None:
        with self._acting() as provider:
            provider.stop(pod_id)

    def resume(self, pod_id: str) -> cloud.Pod:
        with self._acting() as provider:
            return provider.resume(pod_id)

    def get(self, pod_id: str) -> cloud.Pod:
        own = self._reading_own()
        if own is not None:
            return own.get(pod_id)
        return cast(cloud.Pod, self._read("pod", pod_id))

    def list(self, name_prefix: str) -> list[cloud.Pod]:
        own = self._reading_own()
        if own is not None:
            return own.list(name_prefix)
        return cast(list[cloud.Pod], self._read("pods", name_prefix))

    def close(self) -> None:
        if self._own is not None:
            own, self._own = self._own, None
            own.close()

    def _real(self) -> cloud.Provider:
        if self._own is None:
            self._own = self._factory(self._settings)
            self.name = self._own.name
        return self._own

    @contextlib.contextmanager
    def _acting(self) -> Iterator[cloud.Provider]:
        """The real provider for an act; this process reads its own for a while after it (even a failed one)."""
        try:
            yield self._real()
        finally:
            self._own_reads_until = time.monotonic() + self._own_reads_s

    def _reading_own(self) -> cloud.Provider | None:
        """The real provider while this process's last act is recent, else None (the gateway's list)."""
        return self._own if time.monotonic() < self._own_reads_until else None

    def _read(self, method: str, arg: str) -> Any:
        if not self._opened:
            self._gateway("open", (self._key, self._settings))
            self._opened = True
        try:
            return self._gateway(method, (self._key, arg))
        except UnknownGatewayKey:
            self._gateway("open", (self._key, self._settings))
            return self._gateway(method, (self._key, arg))
