"""What a demo run starts and must stop: the embedded Postgres, a local Ray head, the actors, pods.

`Runtime.start` brings them up in order; `Runtime.cleanup` takes down everything the run started,
each step on its own, so one failure cannot leave the rest running (also after Ctrl-C). Ray, the
store and the providers are imported only when a step needs them: `orchestrator --help` stays fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from config.settings import DatabaseBackend, QueueProfile

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from actors.log_shipper import LogShipper
    from actors.scaler import Scaler
    from config.settings import OrchestratorSettings
    from store.base import Store

__all__ = ["Runtime", "Say", "dashboard_lines"]

logger = logging.getLogger(__name__)

Say = Callable[[str], None]  # one progress line for the user


def dashboard_lines(url: str | None, auth_mode: str | None) -> list[str]:
    """Where the Ray dashboard is and how to sign in to it. Ray (2.60) turns token authentication on
    by default for a cluster `ray.init()` starts (RAY_AUTH_MODE=token in this process then): the
    dashboard asks for the token `ray get-auth-token` prints (it is kept in ~/.ray/auth_token)."""
    if not url:
        return ["the Ray dashboard is not available"]
    lines = [f"Ray dashboard: {url}"]
    if (auth_mode or "").lower() == "token":
        lines.append("  sign in with the token `ray get-auth-token` prints (Ray's token auth is on by default)")
    return lines


class Runtime:
    """The parts of one demo run; `started_at` and `t0` mark when its workload clock starts."""

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.store: Store | None = None
        self.conninfo: str | None = None  # the Postgres the demo runs on, once started
        self.ray_started = False
        self.dashboard_url: str | None = None
        self.ray_address: str | None = None  # the demo's own Ray, for `status --address` from elsewhere
        self.scaler: ActorHandle[Scaler] | None = None
        self.shipper: ActorHandle[LogShipper] | None = None
        self.started_at = datetime.now(UTC)  # database time once started
        self.t0 = time.monotonic()
        # Recorded with the Scaler's stop, so `explain` says "stopped (demo ended)", not "silent".
        self.stop_reason = "demo ended"

    def require_store(self) -> Store:
        """The store, once `start` opened it."""
        if self.store is None:
            raise RuntimeError("the demo's store is not open yet")
        return self.store

    # --- start ---------------------------------------------------------------------------------
    def start(self, say: Say) -> None:
        from store.errors import describe_conninfo
        from store.factory import conninfo_for, open_store

        # While the database is away the store says so once and the view shows it; the pool's own
        # line per reconnect attempt would only bury the view under the same news.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
        database = self.settings.database
        if database.backend is DatabaseBackend.EMBEDDED:
            say(f"starting the embedded Postgres in {database.embedded_dir} ...")
        conninfo = conninfo_for(database)
        if conninfo is None:
            raise RuntimeError(
                "the demo needs a Postgres database (DATABASE_URL or the embedded one), not Supabase REST"
            )
        self.conninfo = conninfo
        if database.backend is not DatabaseBackend.EMBEDDED:
            say(f"using DATABASE_URL ({describe_conninfo(conninfo)}): the demo's tasks go there, nothing else changes")
        if self.settings.queue.profile is QueueProfile.REIGH and database.backend is DatabaseBackend.EMBEDDED:
            from store.reigh.fixture import apply_app_fixture

            say("building a Reigh-shaped app database (users, projects, task_types, tasks, workers) ...")
            apply_app_fixture(conninfo)
        self.store = open_store(self.settings, migrate=True)
        say("starting a local Ray head with the dashboard (about 7 s) ...")
        import ray

        context = ray.init(
            address="local",  # a Ray of the demo's own, never one already running on this machine
            num_cpus=2,
            # Lifecycle slots, as every node of a cluster advertises them: lifecycles are placed
            # as in production (README, "Scaling out"), with room for the demo's whole fleet.
            resources={self.settings.ray.lifecycle_resource: max(100, self.settings.scaling.max_workers)},
            include_dashboard=True,
            namespace=self.settings.ray.namespace,
            log_to_driver=False,
            configure_logging=False,
        )
        self.ray_started = True
        url = getattr(context, "dashboard_url", None)
        self.dashboard_url = f"http://{url}" if url and not url.startswith("http") else url
        for line in dashboard_lines(self.dashboard_url, os.environ.get("RAY_AUTH_MODE")):
            say(line)
        self.ray_address = str(ray.get_runtime_context().gcs_address)
        say(f"Ray cluster: {self.ray_address} (`orchestrator status --address {self.ray_address}` asks its actors)")
        say("starting the LogShipper and Scaler actors ...")
        self.shipper, self.scaler = _start_actors(self.settings)
        self.started_at = self.store.now()
        self.t0 = time.monotonic()

    # --- stop ----------------------------------------------------------------------------------
    def cleanup(self, say: Say) -> None:
        """Stop everything this run started, in order; each step on its own so one failure cannot
        leave the rest running."""
        steps = [
            ("stopping the Scaler", self._stop_scaler),
            ("retiring the workers", self._retire_workers),
            ("terminating pods", self._terminate_pods),
            ("flushing logs", self._flush_logs),
            ("stopping Ray", self._stop_ray),
            (
                "closing the database"
                if self.settings.database.backend is not DatabaseBackend.EMBEDDED
                else "stopping the embedded Postgres",
                self._stop_postgres,
            ),
        ]
        for label, step in steps:
            try:
                step()
            except Exception as exc:
                say(f"{label} failed: {type(exc).__name__}: {exc}")

    def _stop_scaler(self) -> None:
        if self.scaler is None:
            return
        import ray

        with _best_effort("stopping the Scaler"):
            ray.get(self.scaler.stop.remote(self.stop_reason), timeout=30)

    def _retire_workers(self) -> None:
        """Ask each worker's lifecycle to stop its pod, the way `orchestrator down --terminate-pods`
        does, and wait a little for the rows to say terminated; the next step forces what is left."""
        if self.store is None or not self.ray_started:
            return
        import ray

        from actors import names

        live = self.store.list_workers(include_terminated=False)
        for worker in live:
            with _best_effort("asking a lifecycle to stop its pod"):
                try:
                    handle = ray.get_actor(names.worker_actor_name(worker.id), namespace=self.settings.ray.namespace)
                except ValueError:  # not started yet, or already gone: the next step terminates its pod
                    logger.info("demo cleanup: worker %s has no lifecycle to ask", worker.id)
                    continue
                ray.get(handle.request_terminate.remote("demo ended"), timeout=5)
        deadline = time.monotonic() + 20
        while live and time.monotonic() < deadline:
            time.sleep(0.5)
            live = self.store.list_workers(include_terminated=False)

    def _terminate_pods(self) -> None:
        """Every pod of this orchestrator, and its worker row, so nothing keeps running."""
        from cloud.factory import make_provider
        from fleet.models import WorkerState

        if self.ray_started:  # no lifecycle may react to the pods going away below
            from actors import names

            for name, namespace in _named_actors():
                if name == names.LOG_SHIPPER_NAME:  # it flushes the last logs next, then goes with Ray
                    continue
                with _best_effort("killing an actor"):
                    _kill_named_actor(name, namespace)
        provider = make_provider(self.settings)
        try:
            for pod in provider.list(self.settings.provider.name_prefix):
                provider.terminate(pod.id)
        finally:
            provider.close()
        if self.store is None:
            return
        for worker in self.store.list_workers(include_terminated=False):
            with _best_effort("marking a worker terminated"):
                self.store.transition_worker(
                    worker.id, worker.status, WorkerState.TERMINATED, "demo ended: pod terminated by the demo"
                )

    def _flush_logs(self) -> None:
        if self.shipper is None:
            return
        import ray

        with _best_effort("flushing the last logs"):
            ray.get(self.shipper.flush_now.remote(5.0), timeout=10)

    def _stop_ray(self) -> None:
        if not self.ray_started:
            return
        import ray

        for name, namespace in _named_actors():
            with _best_effort("killing an actor"):
                _kill_named_actor(name, namespace)
        ray.shutdown()
        self.ray_started = False

    def _stop_postgres(self) -> None:
        if self.store is not None:
            with _best_effort("closing the store"):
                self.store.close()
        if self.settings.database.backend is not DatabaseBackend.EMBEDDED:
            return  # the user's own database: not ours to stop
        from store.embedded import stop_embedded

        stop_embedded(Path(self.settings.database.embedded_dir))


def _kill_named_actor(name: str, namespace: str) -> None:
    """Kill one named actor. One that died between the listing and the lookup (a lifecycle whose
    pod went away while Ctrl-C arrived) is already where this step wants it: nothing to kill."""
    import ray

    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        logger.info("demo cleanup: actor %s was already gone", name)
        return
    ray.kill(handle, no_restart=True)


def _named_actors() -> list[tuple[str, str]]:
    import ray

    try:
        actors = ray.util.list_named_actors(all_namespaces=True)
    except Exception:
        return []
    return [(a["name"], a["namespace"]) for a in actors]


def _start_actors(
    settings: OrchestratorSettings,
) -> tuple[ActorHandle[LogShipper] | None, ActorHandle[Scaler] | None]:
    """The LogShipper and the Scaler, started (or re-attached) by `orchestrator.app.start_actors`."""
    from actors import names, remote
    from orchestrator import app

    app.start_actors(settings)
    namespace = settings.ray.namespace
    return remote.find_actor(names.LOG_SHIPPER_NAME, namespace), remote.find_actor(names.SCALER_NAME, namespace)


@contextlib.contextmanager
def _best_effort(what: str) -> Iterator[None]:
    """A cleanup step that may fail because its object is already gone: the run goes on, but the
    failure is said (WARNING, with the reason) and counted, never swallowed."""
    try:
        yield
    except Exception as exc:
        from actors._telemetry import record_error
        from store.errors import redact

        record_error("demo", what)
        logger.warning("demo cleanup: %s failed: %s", what, redact(f"{type(exc).__name__}: {exc}"))
