"""The whole orchestrator's configuration, as typed pydantic models.

Sources, later wins: field defaults, a YAML file, environment variables with the prefix
`ORCHESTRATOR_` and `__` for nesting (`ORCHESTRATOR_SCALING__MAX_WORKERS=8`). The standard
variables of the services we talk to (`DATABASE_URL`, `SUPABASE_URL`,
`SUPABASE_SERVICE_ROLE_KEY`, `RUNPOD_API_KEY`, `OTEL_*`) are honoured as they are, because
operators already have them set. Every secret is a `SecretStr`, so a repr or a dump never shows it.

The `ORCHESTRATOR_*` variables are read by pydantic-settings, imported only when settings are built
(config/_environment.py), never where they are only received: a WorkerLifecycle's process unpickles
the settings the Scaler gave it without loading pydantic-settings (~1.5 MiB per lifecycle). The
models also build their validators on first use (`defer_build`), so a process that only reads
settings never builds them.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "DatabaseBackend",
    "DatabaseSettings",
    "LogShippingSettings",
    "OrchestratorSettings",
    "OrphanPodPolicy",
    "PodTemplate",
    "ProviderKind",
    "ProviderSettings",
    "QueueProfile",
    "QueueSettings",
    "RaySettings",
    "ScalingSettings",
    "TelemetrySettings",
    "WorkerCredentials",
    "WorkerSettings",
]


# How the ORCHESTRATOR_* variables name a field: `ORCHESTRATOR_SCALING__MAX_WORKERS`.
ENV_PREFIX = "ORCHESTRATOR_"
ENV_NESTED_DELIMITER = "__"


class _Section(BaseModel):
    # A misspelled key in a YAML file is an error, never silently ignored. Validators are built on
    # first use: a process that only receives settings (a WorkerLifecycle) never builds them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


class DatabaseBackend(StrEnum):
    EMBEDDED = "embedded"  # a Postgres started on this machine in `embedded_dir`: reachable from this host only
    POSTGRES = "postgres"  # the Postgres at `url` (DATABASE_URL); Supabase's direct and pooler strings work
    SUPABASE = "supabase"  # Supabase's REST API at `supabase_url` with the service-role key


class WorkerCredentials(StrEnum):
    SCOPED = "scoped"  # each pod gets a credential of its own worker (a login role, or a JWT on Supabase)
    SHARED = "shared"  # each pod gets the orchestrator's own credential: only where roles cannot be made


class DatabaseSettings(_Section):
    """Where the task queue and the orchestrator's records live. The backend is said, never guessed."""

    backend: DatabaseBackend = Field(
        default=DatabaseBackend.EMBEDDED,
        description="`embedded` (a Postgres started on this machine in embedded_dir, for the demo and local "
        "use), `postgres` (the one at `url`) or `supabase` (the REST API at `supabase_url`). Never guessed from "
        "which variable is set: a `url` or `supabase_url` the backend would not use is refused, naming the "
        "setting to change (ORCHESTRATOR_DATABASE__BACKEND).",
    )
    url: SecretStr | None = Field(
        default=None,
        description="backend `postgres`: the Postgres connection string (also read from DATABASE_URL). "
        "Supabase's direct and pooler strings work.",
    )
    supabase_url: str | None = Field(
        default=None,
        description="backend `supabase`: the Supabase project URL (also read from SUPABASE_URL), used through "
        "the REST API. With backend `postgres` it is only handed to pods (the reigh profile's worker uses it).",
    )
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        description="Supabase service-role key (also read from SUPABASE_SERVICE_ROLE_KEY).",
    )
    supabase_jwt_secret: SecretStr | None = Field(
        default=None,
        description="backend `supabase`, native profile: the project's JWT secret (also read from "
        "SUPABASE_JWT_SECRET; Project Settings > API > JWT Settings), with which the orchestrator signs each "
        "pod's own token. Never handed to a pod.",
    )
    worker_credentials: WorkerCredentials = Field(
        default=WorkerCredentials.SCOPED,
        description="native profile: `scoped` gives each pod a credential of its own worker that can claim, "
        "heartbeat, finish the tasks it holds and write its logs, and nothing else (a Postgres login role, "
        "which needs CREATEROLE on the orchestrator's connection; on Supabase a JWT, which needs "
        "supabase_jwt_secret). `shared` hands every pod the orchestrator's own credential instead: any pod "
        "could then read and rewrite everything; only for a database where roles cannot be made.",
    )
    worker_credential_ttl_s: float = Field(
        default=30 * 86_400.0,
        gt=0,
        le=366 * 86_400.0,
        description="How long a pod's own credential is valid: longer than any pod lives (it is revoked when "
        "the worker is terminated anyway). A pod that outlives it can no longer reach the database.",
    )
    embedded_dir: Path = Field(
        default=Path(".orchestrator/pgdata"),
        description="backend `embedded`: the data directory of the Postgres started on this machine.",
    )
    pool_min_size: int = Field(default=1, ge=1, le=100, description="Connections kept open per process.")
    pool_max_size: int = Field(default=8, ge=1, le=200, description="Most connections per process.")
    gateway_pool_size: int = Field(
        default=3,
        ge=1,
        le=50,
        description="Connections of the store gateway, the one actor through which every WorkerLifecycle "
        "reads and writes: the lifecycles' share of the database, whatever the fleet's size.",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, le=120, description="Seconds to wait for a connection before giving up."
    )
    request_retries: int = Field(
        default=4, ge=0, le=20, description="Retries of a transient failure on calls that are safe to repeat."
    )
    outage_backoff_cap_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="While the database is unreachable, the Scaler, the lifecycles and the demo try again "
        "with exponential backoff and jitter, waiting at most this long between tries.",
    )
    outage_limit_s: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="The demo gives up (with a clear message) when the database stays unreachable longer "
        "than this; the actors of `orchestrator up` and the workers never give up on their own.",
    )

    @model_validator(mode="after")
    def _pool_bounds(self) -> Self:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"pool_min_size ({self.pool_min_size}) must not exceed pool_max_size ({self.pool_max_size})"
            )
        return self

    @model_validator(mode="after")
    def _backend_has_its_database(self) -> Self:
        """The backend gets what it needs, and nothing names a database the backend would not use."""
        backend = self.backend
        choose = "set database.backend (ORCHESTRATOR_DATABASE__BACKEND)"
        if backend is DatabaseBackend.POSTGRES and self.url is None:
            raise ValueError("backend is postgres but database.url is not set: set DATABASE_URL (or database.url)")
        if backend is DatabaseBackend.SUPABASE:
            missing = [
                name
                for name, value in (
                    ("supabase_url (SUPABASE_URL)", self.supabase_url),
                    ("supabase_service_role_key (SUPABASE_SERVICE_ROLE_KEY)", self.supabase_service_role_key),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"backend is supabase but database.{' and database.'.join(missing)} not set")
            if self.url is not None:
                raise ValueError(
                    "backend is supabase but database.url (DATABASE_URL) is set too, and would not be used: "
                    f"unset it, or {choose} to postgres to use it"
                )
        if backend is DatabaseBackend.EMBEDDED:
            if self.url is not None:
                raise ValueError(
                    "database.url (DATABASE_URL) is set but database.backend is embedded (the default), which "
                    f"would not use it: {choose} to postgres to use that database, or unset it. The backend is "
                    "never guessed from which variable is set"
                )
            if self.supabase_url:
                raise ValueError(
                    "database.supabase_url (SUPABASE_URL) is set but database.backend is embedded (the default), "
                    f"which would not use it: {choose} to supabase (or to postgres with DATABASE_URL), or unset "
                    "it. The backend is never guessed from which variable is set"
                )
        return self


class ProviderKind(StrEnum):
    LOCAL = "local"  # pods are local processes running the reference worker (demo, tests)
    RUNPOD = "runpod"  # real RunPod GPU pods through the runpod SDK


class OrphanPodPolicy(StrEnum):
    TERMINATE = "terminate"  # a pod with our prefix and no live worker row costs money: stop it
    ADOPT = "adopt"  # give it a worker row and a lifecycle, for operators who migrate by hand


class PodTemplate(_Section):
    """What a RunPod pod is made of. Preference lists are walked in order on capacity errors."""

    image: str = Field(default="ghcr.io/example/gpu-worker:latest", min_length=1, description="Container image.")
    gpu_types: list[str] = Field(
        default_factory=lambda: ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"],
        min_length=1,
        description="GPU type ids in order of preference.",
    )
    gpu_count: int = Field(default=1, ge=1, le=8, description="GPUs per pod.")
    cloud_type: str = Field(
        default="SECURE", pattern="^(SECURE|COMMUNITY|ALL)$", description="RunPod cloud: SECURE, COMMUNITY or ALL."
    )
    container_disk_gb: int = Field(default=50, ge=1, le=2000, description="Container disk in GB.")
    volume_mount_path: str = Field(default="/workspace", description="Where a network volume is mounted.")
    network_volumes: list[str] = Field(
        default_factory=list,
        description="Network volume ids (or names) in order of preference; empty for none.",
    )
    ram_tiers_gb: list[int] = Field(
        default_factory=lambda: [72, 60, 48],
        description="Minimum system RAM in GB, in order of preference.",
    )
    min_vcpu: int = Field(default=8, ge=1, le=256, description="Minimum vCPUs.")
    ports: str = Field(default="22/tcp", description="Exposed ports in RunPod's syntax, e.g. '8888/http,22/tcp'.")
    extra_env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the worker.")
    start_command: str | None = Field(
        default=None,
        description="Shell command the pod runs (RunPod dockerArgs), with $VARS of the pod env; empty for the "
        "image's own. The reigh profile's default starts Headless-Wan2GP: python worker.py --supabase-url "
        '"$SUPABASE_URL" --supabase-access-token "$SUPABASE_SERVICE_ROLE_KEY" --worker "$WORKER_ID".',
    )


class ProviderSettings(_Section):
    """Which pod provider to use and how to reach it."""

    kind: ProviderKind = Field(default=ProviderKind.LOCAL, description="`local` or `runpod`.")
    name_prefix: str = Field(
        default="gpu-",
        min_length=1,
        max_length=20,
        pattern=r"^[a-z][a-z0-9-]*$",
        description="Pods whose name starts with this belong to this orchestrator.",
    )
    runpod_api_key: SecretStr | None = Field(default=None, description="RunPod API key (also RUNPOD_API_KEY).")
    runpod_api_base_url: str | None = Field(
        default=None, description="RunPod API base URL (also RUNPOD_API_BASE_URL); default is RunPod's."
    )
    template: PodTemplate = Field(default_factory=PodTemplate, description="The pod template.")
    orphan_pod_policy: OrphanPodPolicy = Field(
        default=OrphanPodPolicy.TERMINATE,
        description="What to do with a pod that has our prefix and no live worker row.",
    )
    request_max_attempts: int = Field(default=5, ge=1, le=20, description="Attempts per provider call.")
    request_max_seconds: float = Field(default=60.0, gt=0, le=600, description="Time budget per provider call.")
    local_boot_delay_s: float = Field(
        default=3.0, ge=0, le=3600, description="LocalProvider: seconds a pod takes to boot."
    )
    local_worker_handler: str = Field(
        default="worker.handlers:demo_handler",
        description="LocalProvider: the `module:function` task handler its workers run.",
    )


class ScalingSettings(_Section):
    """The scaling policy's knobs."""

    min_workers: int = Field(default=0, ge=0, le=1000, description="Workers kept alive with no demand.")
    max_workers: int = Field(default=10, ge=0, le=1000, description="Never more workers than this.")
    tasks_per_worker: int = Field(default=1, ge=1, le=1000, description="Tasks one worker runs at once.")
    per_user_concurrency_limit: int = Field(
        default=3, ge=1, le=10_000, description="Most tasks of one user in progress at once."
    )
    cycle_interval_s: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds between Scaler cycles when nothing wakes it."
    )
    wake_debounce_s: float = Field(
        default=1.0,
        ge=0,
        le=600,
        description="Least seconds between cycles woken by a task notification (a stream of inserts wakes the "
        "Scaler at most once per this); 0: every notification.",
    )
    provider_list_interval_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="A cycle woken by a notification reuses the provider's pod list when it is younger than "
        "this; timed cycles always list. 0: list on every cycle.",
    )
    spawn_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="A worker with no first heartbeat by then is an error (about twice the slowest boot seen).",
    )
    heartbeat_interval_s: float = Field(default=10.0, gt=0, le=3600, description="Worker heartbeat period.")
    heartbeat_timeout_s: float = Field(
        default=90.0, gt=0, le=86_400, description="An active worker silent this long is an error."
    )
    idle_timeout_s: float = Field(
        default=240.0, ge=0, le=86_400, description="An idle worker above min_workers may go after this."
    )
    drain_timeout_s: float = Field(
        default=900.0, gt=0, le=86_400, description="Longest wait for a draining worker's tasks."
    )
    scale_down_stabilization_s: float = Field(
        default=120.0, ge=0, le=86_400, description="No scale-down this soon after the last scale-up."
    )
    max_spawns_per_cycle: int = Field(default=4, ge=1, le=100, description="Most spawns in one decision.")
    failure_window_s: float = Field(
        default=1800.0, gt=0, le=86_400, description="Rolling window of the failure-rate breaker."
    )
    failure_rate_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Failure fraction in the window that opens the breaker."
    )
    min_attempts_for_breaker: int = Field(
        default=4, ge=1, le=1000, description="Spawn attempts in the window before the breaker may open."
    )
    breaker_cooldown_s: float = Field(
        default=300.0, ge=0, le=86_400, description="An open breaker waits this long before one probe."
    )
    default_boot_time_s: float = Field(
        default=120.0, gt=0, le=86_400, description="Expected boot time until one has been measured."
    )
    max_task_attempts: int = Field(default=3, ge=1, le=100, description="A task fails for good after this many.")
    mass_silence_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="When more than this share of the heartbeating workers look lost at once (and at least "
        "mass_silence_min_workers), it is an infrastructure fault: nobody is terminated for it.",
    )
    mass_silence_min_workers: int = Field(
        default=2, ge=1, le=1000, description="Fewest workers silent at once that can make an infrastructure fault."
    )
    mass_silence_grace_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="After an infrastructure fault, heartbeat losses are re-checked after this long.",
    )
    warm_pool_size: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Most drained pods kept stopped for a quick resume instead of terminated (0: none; "
        "a stopped pod bills only its disk).",
    )
    default_resume_time_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="Seconds a stopped pod takes to resume and heartbeat, until a resume has been measured.",
    )
    warm_pool_keep_s: float = Field(
        default=21_600.0,
        gt=0,
        le=30 * 86_400,
        description="A stopped pod not resumed within this long is terminated.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        problems = []
        if self.min_workers > self.max_workers:
            problems.append(f"min_workers ({self.min_workers}) must not exceed max_workers ({self.max_workers})")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            problems.append(
                f"heartbeat_timeout_s ({self.heartbeat_timeout_s}) must be longer than "
                f"heartbeat_interval_s ({self.heartbeat_interval_s})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class TelemetrySettings(_Section):
    """OpenTelemetry export. With no endpoint nothing is exported and nothing fails."""

    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP endpoint (also OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://localhost:4318.",
    )
    otlp_protocol: str = Field(
        default="http/protobuf",
        pattern="^(grpc|http/protobuf)$",
        description="`grpc` or `http/protobuf` (also OTEL_EXPORTER_OTLP_PROTOCOL).",
    )
    service_name: str = Field(
        default="gpu-orchestrator", min_length=1, description="service.name (also OTEL_SERVICE_NAME)."
    )
    sampling_ratio: float = Field(default=1.0, ge=0, le=1, description="Fraction of lifecycle traces kept.")


class LogShippingSettings(_Section):
    """How log records travel from every process to `system_logs`."""

    batch_size: int = Field(default=500, ge=1, le=50_000, description="Records per database insert.")
    flush_interval_s: float = Field(default=0.5, gt=0, le=600, description="Longest wait before a flush.")
    spool_dir: Path = Field(
        default=Path(".orchestrator/spool"), description="Where acknowledged records wait for the database."
    )
    fallback_file: Path = Field(
        default=Path(".orchestrator/logs/fallback.jsonl"),
        description="JSON-lines file written while the database or the LogShipper is unreachable.",
    )
    dead_letter_file: Path = Field(
        default=Path(".orchestrator/logs/dead-letter.jsonl"),
        description="Rows the database rejected, with the reason.",
    )
    max_buffer_records: int = Field(
        default=20_000, ge=100, le=10_000_000, description="In-process buffer bound per process."
    )
    max_spool_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024 * 1024, description="Spool bound; oldest DEBUG goes first past it."
    )
    stale_flush_alarm_s: float = Field(
        default=60.0, gt=0, le=86_400, description="Records waiting this long unflushed mean a stuck shipper."
    )
    health_timeout_s: float = Field(default=5.0, gt=0, le=600, description="Timeout of the health probe.")
    level: str = Field(
        default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$", description="Lowest level shipped."
    )


class WorkerSettings(_Section):
    """The reference worker that runs inside a pod."""

    task_types: list[str] = Field(default_factory=list, description="Task types it claims; empty for all.")
    poll_interval_s: float = Field(default=1.0, gt=0, le=600, description="Wait between empty claims.")
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, le=3600, description="On SIGTERM, time to finish the current task."
    )


class QueueProfile(StrEnum):
    NATIVE = "native"  # our own `tasks` table and SQL functions, our reference worker
    REIGH = "reigh"  # an existing Reigh app's tables and functions, its unchanged Headless-Wan2GP worker


class QueueSettings(_Section):
    """Whose queue the fleet serves. The orchestrator's own state is in the schema `orchestrator`
    either way; `reigh` reads and writes the app's tables in `public` but never changes their shape."""

    profile: QueueProfile = Field(
        default=QueueProfile.NATIVE,
        description="`native` (our tasks table and worker) or `reigh` (an existing Reigh app's queue and worker).",
    )
    run_type: str = Field(
        default="gpu",
        min_length=1,
        description="reigh: the task run type (task_types.run_type) this fleet serves.",
    )
    app_logs: bool = Field(
        default=True,
        description="reigh: also write the orchestrator's logs to the app's system_logs "
        "(func_insert_logs_batch, source_type orchestrator_gpu).",
    )
    new_task_probe_s: float = Field(
        default=0.25,
        ge=0,
        le=60,
        description="reigh: between cycles, how often the Scaler looks for a newly queued task (one indexed "
        "max(created_at)), since a trigger of ours on the app's tasks table is not allowed; 0: wait for the cycle.",
    )
    supabase_anon_key: SecretStr | None = Field(
        default=None,
        description="The Supabase project's anon key, handed to pods as SUPABASE_ANON_KEY (also SUPABASE_ANON_KEY): "
        "reigh's worker uses it; a native pod on Supabase sends it as `apikey` with its own token.",
    )
    replicate_api_token: SecretStr | None = Field(
        default=None, description="reigh: handed to pods as REPLICATE_API_TOKEN (also REPLICATE_API_TOKEN)."
    )


class RaySettings(_Section):
    """Where the actors run."""

    address: str = Field(default="auto", description="Ray address for `orchestrator up`.")
    namespace: str = Field(default="gpu-orchestrator", min_length=1, description="Ray namespace of the actors.")
    lifecycle_resource: str = Field(
        default="orchestrator_lifecycle",
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="Custom Ray resource each WorkerLifecycle actor asks one unit of: a node's amount is its "
        "lifecycle slots, and demand beyond them makes the Ray autoscaler add a node. Used only when some node "
        "advertises it (else the lifecycles go anywhere, with a warning); empty: never used.",
    )
    control_on_head: bool = Field(
        default=True,
        description="Place the Scaler, the LogShipper and the store gateway on the Ray head node, which the "
        "autoscaler never removes.",
    )


class RetentionSettings(_Section):
    """How long the orchestrator keeps its own rows; the leading Scaler deletes older ones in small
    batches (never the reigh app's tables). `explain` answers inside the kept window."""

    enabled: bool = Field(default=True, description="Apply retention at all.")
    system_logs_s: float = Field(
        default=14 * 86_400, gt=0, description="Seconds a system_logs row is kept (by its `at`)."
    )
    worker_events_s: float = Field(
        default=30 * 86_400,
        gt=0,
        description="Seconds a worker_events row is kept; at least scaling.failure_window_s (the breaker's memory).",
    )
    terminated_workers_s: float = Field(
        default=30 * 86_400, gt=0, description="Seconds a terminated worker's row is kept after it ended."
    )
    finished_tasks_s: float = Field(
        default=30 * 86_400,
        gt=0,
        description="native: seconds a Complete, Failed or Cancelled task is kept after it finished.",
    )
    interval_s: float = Field(default=300.0, gt=0, le=86_400, description="Seconds between retention runs.")
    batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="Rows deleted per batch (one short transaction each)."
    )
    max_batches: int = Field(
        default=10, ge=1, le=10_000, description="Most batches per target per run; a backlog goes over several runs."
    )


class OrchestratorSettings(BaseModel):
    """Everything the orchestrator reads. See config/orchestrator.example.yaml.

    Building one (`OrchestratorSettings(**values)`, `model_validate`) reads the `ORCHESTRATOR_*`
    variables too, over `values`, as a pydantic-settings BaseSettings did (config/_environment.py);
    unpickling or copying one reads nothing.
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, defer_build=True)

    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="The database.")
    queue: QueueSettings = Field(default_factory=QueueSettings, description="The queue the fleet serves.")
    provider: ProviderSettings = Field(default_factory=ProviderSettings, description="The pod provider.")
    scaling: ScalingSettings = Field(default_factory=ScalingSettings, description="The scaling policy.")
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings, description="Traces and metrics.")
    log_shipping: LogShippingSettings = Field(default_factory=LogShippingSettings, description="Log shipping.")
    worker: WorkerSettings = Field(default_factory=WorkerSettings, description="The reference worker.")
    ray: RaySettings = Field(default_factory=RaySettings, description="Ray.")
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="How long the orchestrator's own rows are kept."
    )
    lease_ttl_s: float = Field(default=30.0, gt=0, le=3600, description="Leader lease time to live.")
    state_dir: Path = Field(default=Path(".orchestrator"), description="Local state (pgdata, spool, logs).")

    @model_validator(mode="after")
    def _pods_reach_the_database(self) -> Self:
        if self.provider.kind is ProviderKind.RUNPOD and self.database.backend is DatabaseBackend.EMBEDDED:
            raise ValueError(
                "provider.kind is runpod but database.backend is embedded: a RunPod pod cannot reach a Postgres "
                "embedded on this machine (it listens on this host only), so no worker could heartbeat or claim "
                "a task; set database.backend to postgres (with DATABASE_URL) or supabase (with SUPABASE_URL "
                "and SUPABASE_SERVICE_ROLE_KEY)"
            )
        return self

    @model_validator(mode="after")
    def _retention_keeps_the_breakers_memory(self) -> Self:
        if self.retention.worker_events_s < self.scaling.failure_window_s:
            raise ValueError(
                f"retention.worker_events_s ({self.retention.worker_events_s:g}) must be at least "
                f"scaling.failure_window_s ({self.scaling.failure_window_s:g}): the breaker rebuilds from those events"
            )
        return self

    @model_validator(mode="after")
    def _stopped_pods_keep_their_credential(self) -> Self:
        # A resumed pod's worker logs in with the credential it was started with: one that lapsed while
        # the pod was stopped leaves a running GPU that can neither claim nor heartbeat.
        keep_s, ttl_s = self.scaling.warm_pool_keep_s, self.database.worker_credential_ttl_s
        if self.scaling.warm_pool_size > 0 and keep_s >= ttl_s:
            raise ValueError(
                f"scaling.warm_pool_keep_s ({keep_s:g}) must be shorter than database.worker_credential_ttl_s "
                f"({ttl_s:g}): a pod stopped that long would resume with an expired credential"
            )
        return self

    @model_validator(mode="after")
    def _lease_vs_cycle(self) -> Self:
        if self.lease_ttl_s <= self.scaling.cycle_interval_s:
            raise ValueError(
                f"lease_ttl_s ({self.lease_ttl_s}) must be longer than scaling.cycle_interval_s "
                f"({self.scaling.cycle_interval_s}), or the leader loses its lease between cycles"
            )
        return self

    def __init__(self, /, **values: Any) -> None:
        # `values` carry the YAML file's content (see config.loader); the environment overrides them.
        from config import _environment  # pydantic-settings: only where settings are built

        super().__init__(**_environment.with_environment(type(self), values, ENV_PREFIX, ENV_NESTED_DELIMITER))


def standard_environment(environ: dict[str, str]) -> dict[str, Any]:
    """The standard variables of our services, as a nested override dict."""
    mapping: list[tuple[str, tuple[str, str]]] = [
        ("DATABASE_URL", ("database", "url")),
        ("SUPABASE_URL", ("database", "supabase_url")),
        ("SUPABASE_SERVICE_ROLE_KEY", ("database", "supabase_service_role_key")),
        ("SUPABASE_JWT_SECRET", ("database", "supabase_jwt_secret")),
        ("RUNPOD_API_KEY", ("provider", "runpod_api_key")),
        ("RUNPOD_API_BASE_URL", ("provider", "runpod_api_base_url")),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ("telemetry", "otlp_endpoint")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", ("telemetry", "otlp_protocol")),
        ("OTEL_SERVICE_NAME", ("telemetry", "service_name")),
        ("SUPABASE_ANON_KEY", ("queue", "supabase_anon_key")),
        ("REPLICATE_API_TOKEN", ("queue", "replicate_api_token")),
    ]
    out: dict[str, Any] = {}
    for var, (section, field) in mapping:
        value = environ.get(var)
        if value:
            out.setdefault(section, {})[field] = value
    return out
