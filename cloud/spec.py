"""The pod spec and env a worker pod gets: the provider-neutral half of the pod contract.

The caller (the WorkerLifecycle actor, or the Scaler's provisioner) builds the spec here and
passes it to `Provider.create`, so the provider never reads settings or secrets on its own and both
providers start pods with the same env. The caller also hands over the pod's own credential
(`actors.lifecycle.pod_credentials`): a connection string with the worker's own login role, or the
worker's own JWT for Supabase's REST API; nothing here opens or starts a database. In the native
profile no pod ever gets the orchestrator's own credential unless `database.worker_credentials` is
`shared`. See the README's "pod contract" for what each variable means to the worker and what its
credential may do.
"""

from __future__ import annotations

from cloud.base import InvalidSpec, PodSpec
from config.settings import OrchestratorSettings, ProviderKind, QueueProfile, WorkerCredentials

__all__ = [
    "REIGH_START_COMMAND",
    "SECRET_ENV_KEYS",
    "WORKER_TOKEN_ENV",
    "pod_env",
    "pod_spec_for_worker",
    "start_command",
]

# The worker's own JWT for Supabase's REST API (native profile on Supabase).
WORKER_TOKEN_ENV = "SUPABASE_WORKER_TOKEN"

# Env keys whose values are secrets: never logged, never in Pod.raw, never in an error message.
SECRET_ENV_KEYS = frozenset(
    {"DATABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_ANON_KEY", "REPLICATE_API_TOKEN", WORKER_TOKEN_ENV}
)

# How the reigh profile starts the unchanged Headless-Wan2GP worker when the template names no
# command (the replaced orchestrator ran the same over SSH once the pod was up).
REIGH_START_COMMAND = (
    'python worker.py --supabase-url "$SUPABASE_URL" --supabase-access-token "$SUPABASE_SERVICE_ROLE_KEY" '
    '--worker "$WORKER_ID"'
)
# The same flags for the stand-in of that worker that local pods run (demo, tests).
REIGH_LOCAL_START_COMMAND = REIGH_START_COMMAND.replace("python worker.py", "python -m worker.reigh_standin", 1)


def pod_env(
    settings: OrchestratorSettings,
    worker_id: str,
    *,
    database_url: str | None,
    worker_token: str | None = None,
    traceparent: str | None = None,
) -> dict[str, str]:
    """Everything the worker in the pod reads from its environment.

    `database_url` is the Postgres conninfo the pod gets (native: with the worker's own login role;
    the embedded server's too: local pods only, a RunPod pod cannot reach it). `worker_token` is the
    worker's own JWT for Supabase REST (native, backend supabase). With neither, only
    `database.worker_credentials: shared` hands the pod the service-role key. Template `extra_env`
    comes first so it can never override the orchestrator's own variables.
    """
    env: dict[str, str] = dict(settings.provider.template.extra_env)
    if settings.queue.profile is QueueProfile.REIGH:
        env.update(_reigh_env(settings, database_url))
    else:
        env.update(_native_database_env(settings, database_url, worker_token))
    env["WORKER_ID"] = worker_id
    env["HEARTBEAT_INTERVAL_S"] = repr(settings.scaling.heartbeat_interval_s)
    env["WORKER_POLL_INTERVAL_S"] = repr(settings.worker.poll_interval_s)
    env["WORKER_SHUTDOWN_GRACE_S"] = repr(settings.worker.shutdown_grace_s)
    if settings.worker.task_types:
        env["WORKER_TASK_TYPES"] = ",".join(settings.worker.task_types)
    # The policy sizes the fleet at tasks_per_worker tasks per worker; the worker runs that many.
    env["WORKER_CONCURRENCY"] = str(settings.scaling.tasks_per_worker)
    if traceparent:
        env["TRACEPARENT"] = traceparent
    telemetry = settings.telemetry
    if telemetry.otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = telemetry.otlp_endpoint
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = telemetry.otlp_protocol
    env["OTEL_SERVICE_NAME"] = f"{telemetry.service_name}-worker"
    return env


def _native_database_env(
    settings: OrchestratorSettings, database_url: str | None, worker_token: str | None
) -> dict[str, str]:
    db = settings.database
    if database_url:
        return {"DATABASE_URL": database_url}
    if db.supabase_url and worker_token:
        env = {"SUPABASE_URL": db.supabase_url, WORKER_TOKEN_ENV: worker_token}
        anon = settings.queue.supabase_anon_key
        if anon is not None:  # public by design: Supabase's API gateway wants a project key as `apikey`
            env["SUPABASE_ANON_KEY"] = anon.get_secret_value()
        return env
    shared = db.worker_credentials is WorkerCredentials.SHARED
    if shared and db.supabase_url and db.supabase_service_role_key is not None:
        return {
            "SUPABASE_URL": db.supabase_url,
            "SUPABASE_SERVICE_ROLE_KEY": db.supabase_service_role_key.get_secret_value(),
        }
    if db.supabase_url and not shared:
        raise InvalidSpec(
            "the pod would have no credential of its own: a Supabase pod gets a token of its worker (set "
            "SUPABASE_JWT_SECRET), never the service-role key unless database.worker_credentials is shared"
        )
    raise InvalidSpec(
        "the pod would have no database settings: set DATABASE_URL, or SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
    )


def _reigh_env(settings: OrchestratorSettings, database_url: str | None) -> dict[str, str]:
    """The Headless-Wan2GP worker's env (shared/reigh-contract.md): the app's Supabase URL and keys.

    It needs the service-role key (it calls the app's edge functions with it). `DATABASE_URL` goes to
    the pod only when there is no Supabase URL, i.e. a local pod running the stand-in worker against
    the embedded or a direct Postgres (the demo, the tests): a real pod never gets it.
    """
    db, queue = settings.database, settings.queue
    env: dict[str, str] = {}
    if db.supabase_url and db.supabase_service_role_key is not None:
        env["SUPABASE_URL"] = db.supabase_url
        env["SUPABASE_SERVICE_ROLE_KEY"] = db.supabase_service_role_key.get_secret_value()
    elif database_url:
        env["DATABASE_URL"] = database_url
    else:
        raise InvalidSpec(
            "queue profile reigh: the Headless-Wan2GP worker needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
        )
    if queue.supabase_anon_key is not None:
        env["SUPABASE_ANON_KEY"] = queue.supabase_anon_key.get_secret_value()
    if queue.replicate_api_token is not None:
        env["REPLICATE_API_TOKEN"] = queue.replicate_api_token.get_secret_value()
    return env


def start_command(settings: OrchestratorSettings) -> str | None:
    """The template's start command; in the reigh profile when it names none, Headless-Wan2GP's on
    RunPod and its stand-in (worker/reigh_standin.py, the same flags) for local pods."""
    command = settings.provider.template.start_command
    if command:
        return command
    if settings.queue.profile is not QueueProfile.REIGH:
        return None
    return REIGH_LOCAL_START_COMMAND if settings.provider.kind is ProviderKind.LOCAL else REIGH_START_COMMAND


def pod_spec_for_worker(
    settings: OrchestratorSettings,
    worker_id: str,
    *,
    database_url: str | None,
    worker_token: str | None = None,
    traceparent: str | None = None,
) -> PodSpec:
    """The PodSpec for one worker: the template's shape plus `pod_env` (see there for the credentials)."""
    template = settings.provider.template
    env = pod_env(settings, worker_id, database_url=database_url, worker_token=worker_token, traceparent=traceparent)
    return PodSpec(
        image=template.image,
        gpu_types=list(template.gpu_types),
        gpu_count=template.gpu_count,
        cloud_type=template.cloud_type,
        container_disk_gb=template.container_disk_gb,
        volume_mount_path=template.volume_mount_path,
        network_volumes=list(template.network_volumes),
        ram_tiers_gb=list(template.ram_tiers_gb),
        min_vcpu=template.min_vcpu,
        ports=template.ports,
        env=env,
        secret_env_keys=SECRET_ENV_KEYS & env.keys(),
        start_command=start_command(settings),
    )
