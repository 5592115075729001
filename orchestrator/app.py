"""Wiring shared by `orchestrator up`, `down`, `status` and the demo: Ray, the database, the actors.

Nothing here decides anything about the fleet; it connects the pieces and says where to look.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors import names
from config.settings import DatabaseBackend, OrchestratorSettings

logger = logging.getLogger(__name__)

__all__ = [
    "UpReport",
    "actor_table",
    "connect_ray",
    "prepare_database",
    "resolve_settings",
    "start_actors",
    "up",
]


@dataclass
class UpReport:
    database: str
    dashboard_url: str | None
    namespace: str
    actors: dict[str, str] = field(default_factory=dict)  # name -> "created" | "re-attached"
    notes: list[str] = field(default_factory=list)


def resolve_settings(settings: OrchestratorSettings) -> OrchestratorSettings:
    """Settings every actor can use wherever it runs: absolute local paths, and the embedded
    database (which has no URL in the settings) given as the URL of the server started for it
    (backend `postgres` from then on: every process connects to that one server, none starts its own)."""
    state_dir = settings.state_dir.expanduser().resolve()
    shipping = settings.log_shipping
    log_shipping = shipping.model_copy(
        update={
            "spool_dir": _under(state_dir, shipping.spool_dir, Path(".orchestrator")),
            "fallback_file": _under(state_dir, shipping.fallback_file, Path(".orchestrator")),
            "dead_letter_file": _under(state_dir, shipping.dead_letter_file, Path(".orchestrator")),
        }
    )
    database = settings.database
    if database.backend is DatabaseBackend.EMBEDDED:
        from store.factory import conninfo_for

        embedded_dir = _under(state_dir, database.embedded_dir, Path(".orchestrator"))
        database = database.model_copy(update={"embedded_dir": embedded_dir})
        conninfo = conninfo_for(database)
        from pydantic import SecretStr

        database = database.model_copy(update={"url": SecretStr(conninfo or ""), "backend": DatabaseBackend.POSTGRES})
    return settings.model_copy(update={"state_dir": state_dir, "log_shipping": log_shipping, "database": database})


def _under(state_dir: Path, path: Path, default_root: Path) -> Path:
    """A relative path under the default `.orchestrator` root moves under `state_dir`; absolute stays."""
    path = path.expanduser()
    if path.is_absolute():
        return path
    with contextlib.suppress(ValueError):
        return state_dir / path.relative_to(default_root)
    return (Path.cwd() / path).resolve()


def prepare_database(settings: OrchestratorSettings) -> str:
    """Apply pending migrations (Postgres and embedded); returns where the database is, with no secret."""
    from store import factory

    store = factory.open_store(settings, migrate=settings.database.backend is not DatabaseBackend.SUPABASE)
    try:
        return store.describe()
    finally:
        store.close()


def connect_ray(settings: OrchestratorSettings, address: str | None = None) -> Any:
    """Connect this process to a running Ray cluster (`ray start --head` / `ray up`), in our namespace."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    return ray.init(
        address=address or settings.ray.address,
        namespace=settings.ray.namespace,
        log_to_driver=False,
        configure_logging=False,
    )


def dashboard_url(context: Any) -> str | None:
    url = getattr(context, "dashboard_url", None)
    if url:
        return url if url.startswith("http") else f"http://{url}"
    try:
        import ray

        url = ray.worker.get_dashboard_url()
    except Exception as exc:  # no dashboard is not an error of ours: say so and show none
        logging.getLogger(__name__).warning("no Ray dashboard URL: %s: %s", type(exc).__name__, exc)
        return None
    return f"http://{url}" if url else None


def start_actors(settings: OrchestratorSettings, *, scaler_name: str = names.SCALER_NAME) -> dict[str, str]:
    """Create or re-attach the detached actors (LogShipper first, so the Scaler's logs have a home)."""
    from actors import remote

    found: dict[str, str] = {}
    existed = remote.find_actor(names.LOG_SHIPPER_NAME, settings.ray.namespace) is not None
    remote.get_or_create_log_shipper(settings)
    found[names.LOG_SHIPPER_NAME] = "re-attached" if existed else "created"
    existed = remote.find_actor(scaler_name, settings.ray.namespace) is not None
    handle = remote.get_or_create_scaler(settings, name=scaler_name)
    import ray

    ray.get(handle.health.remote(), timeout=120)  # constructed and looping
    found[scaler_name] = "re-attached" if existed else "created"
    return found


def up(settings: OrchestratorSettings, address: str | None = None) -> UpReport:
    """Everything `orchestrator up` does; idempotent (a second run re-attaches and changes nothing)."""
    settings = resolve_settings(settings)
    database = prepare_database(settings)
    context = connect_ray(settings, address)
    actors = start_actors(settings)
    report = UpReport(database=database, dashboard_url=dashboard_url(context), namespace=settings.ray.namespace)
    report.actors = actors
    if "re-attached" in actors.values():
        report.notes.append(
            "existing actors were re-attached and keep the settings they were started with; "
            "run `orchestrator down` then `up` to apply changed settings"
        )
    return report


def state_api_address() -> str:
    """The address `ray.util.state` must be given: the cluster this process is connected to.

    Without one the state API auto-detects, and fails as soon as a second Ray runs on the machine.
    """
    import ray

    return str(ray.get_runtime_context().gcs_address)


def actor_table(namespace: str) -> list[dict[str, Any]]:
    """Every non-dead actor of our namespace: name, Ray state, pid, restarts, repr (needs the dashboard)."""
    from ray.util.state import list_actors

    rows = []
    for actor in list_actors(
        address=state_api_address(),
        filters=[("state", "!=", "DEAD")],
        detail=True,
        limit=10_000,
        raise_on_missing_output=False,
    ):
        if actor.ray_namespace != namespace or not actor.name:
            continue
        rows.append(
            {
                "name": actor.name,
                "state": actor.state,
                "pid": actor.pid,
                "restarts": int(actor.num_restarts or 0),
                "repr": actor.repr_name or "",
            }
        )
    return sorted(rows, key=lambda r: (not r["name"].startswith(names.SCALER_NAME), r["name"]))
