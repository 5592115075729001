"""The Store contract: every read and write of the orchestrator's database goes through it.

No SQL lives outside `store/`. Both implementations (`PostgresStore` over psycopg and
`SupabaseStore` over supabase-py `rpc`) call the same SQL functions from `store/migrations`, so
they behave the same; one contract test suite runs over both.

Times are timezone-aware UTC datetimes at this boundary. Writes made by the Scaler carry the leader
lease epoch (`epoch=`); the database refuses them with `StaleEpoch` once another holder has taken
the lease (fencing). Epochs come from one database sequence, so an epoch names one tenure of one
lease and a fenced write needs no lease name.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from fleet.models import DecisionKind, DemandSnapshot, WorkerState

__all__ = [
    "DatabaseUnavailable",
    "DecisionRecord",
    "Lease",
    "LogInsertResult",
    "LogRecord",
    "NewTask",
    "OrchestratorEvent",
    "OrchestratorEventKind",
    "OrchestratorSignals",
    "RejectedLog",
    "RetentionTarget",
    "RetentionWindow",
    "SignalGap",
    "StaleEpoch",
    "Store",
    "StoreError",
    "TaskRow",
    "TaskStatus",
    "WorkerCredential",
    "WorkerCredentialKind",
    "WorkerCredentialReap",
    "WorkerEvent",
    "WorkerRow",
]


class StoreError(Exception):
    """A database operation failed for a reason that is not transient."""


class DatabaseUnavailable(StoreError):
    """The database could not be reached. The message names the host and what was tried, never a password."""


class StaleEpoch(StoreError):
    """A fenced write carried a lease epoch that is no longer the current one."""


class TaskStatus:
    QUEUED = "Queued"
    IN_PROGRESS = "In Progress"
    COMPLETE = "Complete"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    ALL = (QUEUED, IN_PROGRESS, COMPLETE, FAILED, CANCELLED)


def _as_utc(value: Any) -> Any:
    # The database answers in its session time zone; this boundary speaks UTC. A naive time
    # handed in by a caller is taken as UTC.
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        return _as_utc(value)


class NewTask(_Row):
    task_type: str
    user_id: str
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: str | None = None  # id of a task that must be Complete first
    id: str | None = None  # generated (uuid) when None
    created_at: datetime | None = None  # now() when None; set by fixtures that replay history


class TaskRow(_Row):
    id: str
    task_type: str
    status: str
    user_id: str
    params: dict[str, Any]
    depends_on: str | None
    worker_id: str | None
    attempts: int
    created_at: datetime
    claimed_at: datetime | None
    finished_at: datetime | None
    error: str | None
    result: dict[str, Any] | None = None


class WorkerRow(_Row):
    id: str
    status: WorkerState
    pod_id: str | None
    gpu_type: str | None
    created_at: datetime
    promoted_at: datetime | None
    last_heartbeat_at: datetime | None  # NULL until the first real heartbeat
    terminated_at: datetime | None
    termination_reason: str | None
    trace_context: str | None  # W3C traceparent of the lifecycle anchor span
    metadata: dict[str, Any]
    tasks_in_progress: int = 0  # derived by list_workers/get_worker from tasks
    idle_since: datetime | None = None  # derived: last finished task or promotion when idle
    # derived: when it took the oldest task it holds, and that task's type (None while idle)
    task_started_at: datetime | None = None
    task_type: str | None = None
    # reigh: the status the worker itself last wrote into the app's row ('active', 'crashed', ...)
    reported_status: str | None = None
    # when the row entered its status (a stopped worker: when its pod stopped); None on rows whose
    # events retention deleted before the column existed
    status_since: datetime | None = None

    # Replaces _Row's (same name): only the time fields, as the Scaler parses 1,000 rows every cycle
    # and a validator per field was most of that. A time field added above belongs in this list.
    @field_validator(
        "created_at",
        "promoted_at",
        "last_heartbeat_at",
        "terminated_at",
        "idle_since",
        "task_started_at",
        "status_since",
        mode="after",
    )
    @classmethod
    def _utc(cls, value: Any) -> Any:
        return _as_utc(value)


class WorkerEvent(_Row):
    id: int
    worker_id: str
    at: datetime
    from_status: str | None  # None for the row's creation
    to_status: str
    reason: str
    epoch: int | None = None


class DecisionRecord(_Row):
    id: int | None = None
    at: datetime | None = None  # set by the database
    cycle_number: int
    leader_epoch: int
    holder: str
    inputs: dict[str, Any]  # queued, claimable, in progress, capacity by state, failure rate...
    spawn_count: int
    drain_worker_ids: list[str]
    spawned_worker_ids: list[str] = Field(default_factory=list)
    reasons: list[str]
    breaker: dict[str, Any] = Field(default_factory=dict)
    trace_id: str | None = None
    kind: DecisionKind | None = None  # as the policy decided it; None on rows written before kinds


class OrchestratorEventKind(StrEnum):
    STARTED = "started"  # a Scaler took the leader lease: the orchestrator runs (again)
    STOPPED = "stopped"  # a clean stop (`orchestrator down`, the demo's end, SIGTERM): quiet after it is no outage
    # The database was out of reach from `at` to `ended_at` and nothing was decided meanwhile; recorded
    # once it was back, with what waited in `details`. Quiet in that time is no silence.
    DATABASE_OUTAGE = "database_outage"
    # Many workers looked lost at once: nobody was terminated for it (see fleet.supervision.fleet_silence).
    INFRASTRUCTURE_FAULT = "infrastructure_fault"


class OrchestratorEvent(_Row):
    """A start or clean stop of the orchestrator, with who and why (`orchestrator_events`)."""

    id: int
    at: datetime
    kind: OrchestratorEventKind
    holder: str
    reason: str
    ended_at: datetime | None = None  # an incident's end (a database outage)
    details: dict[str, Any] = Field(default_factory=dict)  # an incident's facts (what waited)


class LogRecord(_Row):
    """One row of `system_logs`. `id` is the producer's unique id, so a replay never duplicates."""

    id: str
    at: datetime
    level: str
    source_type: str  # `orchestrator` or `worker`
    source_id: str
    message: str
    logger: str | None = None
    cycle_number: int | None = None
    worker_id: str | None = None
    task_id: str | None = None
    trace_id: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class RejectedLog(_Row):
    index: int  # position in the batch that was sent
    id: str | None
    reason: str


class LogInsertResult(_Row):
    inserted: int  # rows newly written
    duplicates: int = 0  # ids already present (a replay after a crash): not an error
    rejected: list[RejectedLog] = Field(default_factory=list)


class SignalGap(_Row):
    """Two consecutive orchestrator signals further apart than the silence threshold."""

    start: datetime  # the signal before the gap
    end: datetime  # the signal after it


class OrchestratorSignals(_Row):
    """When the orchestrator was last heard from around a window: its signals are its decisions and
    its own log rows. `explain` reads silences from this (store/migrations: explain_silences)."""

    gaps: list[SignalGap] = Field(default_factory=list)  # gaps longer than the threshold, by end
    last_before: datetime | None = None  # the last signal before the window
    first_after: datetime | None = None  # the first signal after it
    first_inside: datetime | None = None
    last_inside: datetime | None = None
    signals_inside: int = 0


class RetentionTarget(StrEnum):
    """What retention deletes from (store/migrations/0070_retention.sql): by age, terminated
    workers' rows by when they ended, finished tasks of the native queue by when they finished."""

    SYSTEM_LOGS = "system_logs"
    WORKER_EVENTS = "worker_events"
    WORKERS = "workers"
    TASKS = "tasks"


class RetentionWindow(_Row):
    """Where the retained window of one target starts: rows older than `cutoff` were deleted (or
    are being deleted in batches) by the last run, with `keep_s` as the window."""

    target: str
    keep_s: float
    cutoff: datetime
    deleted: int = 0  # rows deleted so far, all runs
    applied_at: datetime


class WorkerCredentialKind(StrEnum):
    """How a pod reaches the database (store/migrations/0005_worker_credentials.sql)."""

    LOGIN = "login"  # a Postgres login role of the worker's own (direct connections)
    TOKEN = "token"  # a JWT for Supabase's REST API, signed by the orchestrator with the project's secret


class WorkerCredential(_Row):
    """One worker's own credential: what its pod gets instead of the orchestrator's.

    `password` is a SecretStr (never in a repr or a log) and is only present until the worker is
    promoted: the pod has it by then, and the database forgets it."""

    worker_id: str
    kind: WorkerCredentialKind
    role_name: str | None = None  # LOGIN: the worker's Postgres role
    password: SecretStr | None = None  # LOGIN
    token_id: str | None = None  # TOKEN: the JWT's `jti`
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None


class WorkerCredentialReap(_Row):
    """What `reap_worker_credentials` cleaned up after a crash."""

    revoked: list[str] = Field(default_factory=list)  # worker ids whose credential it revoked
    dropped_roles: list[str] = Field(default_factory=list)  # roles of this database it dropped


class Lease(_Row):
    name: str
    holder: str
    epoch: int
    expires_at: datetime
    acquired: bool  # True when the caller holds it after the call


@runtime_checkable
class Store(Protocol):
    """Everything the orchestrator, its actors and its workers read and write."""

    # --- lifecycle of the store object -------------------------------------------------------
    def close(self) -> None: ...

    def describe(self) -> str:
        """Where this store points, with no secret: `postgres at host:5432/db`, `supabase at URL`."""
        ...

    # --- tasks -------------------------------------------------------------------------------
    def insert_tasks(self, tasks: list[NewTask]) -> list[str]:
        """Insert Queued tasks; returns their ids in order."""
        ...

    def claim_next_task(self, worker_id: str, task_types: list[str] | None = None) -> TaskRow | None:
        """Atomically claim one claimable task for an `active` worker (FOR UPDATE SKIP LOCKED)."""
        ...

    def complete_task(self, task_id: str, worker_id: str, result: dict[str, Any] | None = None) -> bool:
        """Mark Complete if this worker holds it In Progress; False otherwise."""
        ...

    def worker_held_tasks(self, worker_id: str) -> list[TaskRow]:
        """The tasks this worker holds In Progress (what a claim whose answer was lost may have taken)."""
        ...

    def worker_task_status(self, task_id: str, worker_id: str) -> str | None:
        """The status of a task this worker holds or finished; None when it is not this worker's.

        The one read a worker's own credential may make (after a completion whose answer was lost).
        """
        ...

    def fail_task(self, task_id: str, worker_id: str, error: str) -> str | None:
        """Count a failed attempt: back to Queued, or Failed past max attempts. Returns the new status."""
        ...

    def requeue_worker_tasks(self, worker_id: str) -> int:
        """A dead worker's In Progress tasks go back to Queued (worker_id NULL); returns how many.

        A task whose attempts reached max_task_attempts is Failed instead, with the reason (a task
        that keeps killing its pod is poison). Native: the claim counted the attempt; reigh: the
        app's semantics (attempts + 1 on the way back). Counted in the result either way.
        """
        ...

    def demand_snapshot(self, per_user_limit: int | None = None, task_types: list[str] | None = None) -> DemandSnapshot:
        """Queued, claimable (after dependencies and per-user limits) and in-progress counts in one query.

        `per_user_limit` None uses the database's queue setting (see configure_queue). `task_types`:
        count only tasks of these types (the ones the fleet's workers claim); None or empty: all.
        """
        ...

    def configure_queue(self, per_user_limit: int, max_task_attempts: int) -> None:
        """Store the per-user concurrency limit and max attempts where the SQL functions read them.

        Workers in any language call claim_next_task(worker_id, task_types) without knowing the
        limit, so it lives in the database (`queue_settings`); the Scaler writes it from config.
        """
        ...

    def configure_reigh(self, run_type: str, app_logs: bool) -> None:
        """reigh profile: the run type the fleet serves and whether its logs also go to the app's
        system_logs (an error on a database migrated for the native profile)."""
        ...

    def get_task(self, task_id: str) -> TaskRow | None: ...

    def list_tasks(self, status: str | None = None, limit: int = 10_000) -> list[TaskRow]:
        """The oldest `limit` tasks (of that status), oldest first."""
        ...

    def task_counts(self) -> dict[str, int]:
        """Tasks by status."""
        ...

    # --- workers -----------------------------------------------------------------------------
    def create_worker(
        self,
        worker_id: str,
        *,
        reason: str,
        epoch: int | None = None,
        gpu_type: str | None = None,
        trace_context: str | None = None,
        metadata: dict[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> WorkerRow:
        """Write the intent: a `spawning` row and its first worker_events row. Idempotent by id."""
        ...

    def get_worker(self, worker_id: str) -> WorkerRow | None: ...

    def list_workers(
        self, include_terminated: bool = False, *, on_malformed: Callable[[str, str], None] | None = None
    ) -> list[WorkerRow]:
        """Live worker rows (and terminated ones when asked). With `on_malformed`, a row that does not
        parse is handed to it as (worker id, what is wrong) and left out, instead of failing the list."""
        ...

    def set_worker_pod(
        self, worker_id: str, pod_id: str, gpu_type: str | None, metadata: dict[str, Any] | None = None
    ) -> None:
        """Record the pod the provider created (and merge metadata: volume, RAM tier, ssh endpoint)."""
        ...

    def transition_worker(
        self,
        worker_id: str,
        expected: WorkerState | None,
        new: WorkerState,
        reason: str,
        *,
        epoch: int | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Compare-and-set the status and append a worker_events row in one transaction.

        False when the row's status is not `expected` (a lost race: re-read, never overwrite), when
        there is no such row, or when it is `terminated` (never left). `expected` None: any status.
        Sets promoted_at on `active`, terminated_at and termination_reason on `terminated`.
        """
        ...

    def note_worker(
        self, worker_id: str, reason: str, *, epoch: int | None = None, metadata: dict[str, Any] | None = None
    ) -> bool:
        """Record a note on the worker's record that changes no state (a failed pod terminate, an extra
        pod terminated): a worker_events row with from = to = its status, metadata merged. Fenced by
        `epoch` when given; False when there is no such worker."""
        ...

    def worker_heartbeat(self, worker_id: str, metadata: dict[str, Any] | None = None) -> WorkerState | None:
        """Set last_heartbeat_at, merge metadata; returns the status the orchestrator set (or None)."""
        ...

    def list_worker_events(
        self,
        worker_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[WorkerEvent]:
        """Events with since <= at < until, the newest `limit` of them, oldest first."""
        ...

    # --- decisions ---------------------------------------------------------------------------
    def record_decision(self, decision: DecisionRecord) -> int:
        """Persist a decision (fenced by decision.leader_epoch); returns its id."""
        ...

    def set_decision_spawned(self, decision_id: int, worker_ids: list[str]) -> None:
        """Attach the worker ids a decision spawned."""
        ...

    def list_decisions(
        self, since: datetime | None = None, until: datetime | None = None, limit: int = 1000
    ) -> list[DecisionRecord]:
        """Decisions with since <= at < until, the newest `limit` of them, oldest first (newest last)."""
        ...

    def record_orchestrator_event(
        self,
        kind: OrchestratorEventKind,
        holder: str,
        reason: str,
        *,
        at: datetime | None = None,
        ended_at: datetime | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Record a start, clean stop or ridden-out incident of the orchestrator (not fenced); returns
        its id. `at`: now when None; `ended_at` and `details` for an incident (a database outage)."""
        ...

    def list_orchestrator_events(
        self, since: datetime | None = None, until: datetime | None = None, limit: int = 1000
    ) -> list[OrchestratorEvent]:
        """Starts and stops with since <= at < until, the newest `limit` of them, oldest first."""
        ...

    # --- logs --------------------------------------------------------------------------------
    def insert_system_logs(self, records: list[LogRecord]) -> LogInsertResult:
        """Insert a batch; reports rejected rows with why and never counts them as inserted."""
        ...

    def list_system_logs(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        source_id: str | None = None,
        limit: int = 10_000,
    ) -> list[LogRecord]:
        """Records with since <= at < until, the newest `limit` of them, oldest first."""
        ...

    # --- worker credentials (what a pod gets instead of the orchestrator's own) ----------------
    def issue_worker_credential(
        self, worker_id: str, kind: WorkerCredentialKind, valid_for_s: float
    ) -> WorkerCredential:
        """The worker's own credential, created on the first call (a LOGIN role needs CREATEROLE on the
        orchestrator's connection) and the same on every later one, so two create calls for one pod give
        it one credential. Refused (StoreError) for a worker with no row, a terminated or revoked one."""
        ...

    def revoke_worker_credential(self, worker_id: str, reason: str) -> bool:
        """Revoke it now (a token is refused, a role can no longer log in and is dropped); False when the
        worker has none. The database does this itself when the worker's row becomes `terminated`."""
        ...

    def reap_worker_credentials(self) -> WorkerCredentialReap:
        """Revoke the credentials of workers terminated, gone or expired, and drop the roles of this
        database that no live credential names (what a crash left behind). Safe to repeat."""
        ...

    # --- leader lease ------------------------------------------------------------------------
    def acquire_leader_lease(self, name: str, holder: str, ttl_s: float, *, successor_of: str | None = None) -> Lease:
        """Take the lease if free or expired (a new epoch) or renew it if already ours (same epoch).

        `successor_of`: the caller's lineage (its holder is `<lineage>#<incarnation>`); a lease held by
        another incarnation of that lineage is taken over at once, with a new epoch (see
        store/migrations/0010_leases.sql)."""
        ...

    def release_leader_lease(self, name: str, holder: str, epoch: int) -> None:
        """Let the lease expire now, so a standby takes it at once (with a new epoch)."""
        ...

    def get_leader_lease(self, name: str) -> Lease | None:
        """The lease row; here `acquired` means someone holds it unexpired."""
        ...

    # --- explain (read-only, indexed queries for `orchestrator explain`) ----------------------
    def explain_silences(self, since: datetime, until: datetime, threshold_s: float) -> OrchestratorSignals:
        """The gaps longer than `threshold_s` between the orchestrator's signals (decisions and its own
        log rows) that touch [since, until], and its last signal before and first after the window."""
        ...

    def worker_tasks(self, worker_id: str, limit: int = 1000) -> list[TaskRow]:
        """The tasks a worker holds or last held, oldest claim first (unclaimed last)."""
        ...

    # --- notifications -----------------------------------------------------------------------
    # --- retention ---------------------------------------------------------------------------
    def apply_retention(self, target: RetentionTarget, keep_s: float, batch: int = 1000) -> int:
        """Delete at most `batch` rows of `target` older than `keep_s` seconds (database clock), in one
        short transaction that locks only those rows; returns how many. Never the reigh app's rows."""
        ...

    def retention_windows(self) -> list[RetentionWindow]:
        """Where each retained window starts, for the targets retention has run on."""
        ...

    def wait_for_task_change(self, timeout_s: float) -> bool:
        """Block until a task is inserted or changes status (True) or the timeout passes (False).

        Stores without notifications (Supabase REST) sleep the timeout and return False.
        """
        ...

    def now(self) -> datetime:
        """The database's clock."""
        ...
