"""WorkerLifecycle: owns one pod from request to termination (made a Ray actor in actors/remote.py).

The Scaler writes the worker row (`spawning`, with the lifecycle trace context and the lease epoch)
before it creates this actor, so the row is the intent and the single source of truth. This actor
loops in a background thread started from `__init__`: a restart (Ray reruns `__init__` after a
SIGKILL) resumes from the row at once, and no long-running method exists that Ray could replay.

One step = observe (the row: state, heartbeat, tasks in progress; the pod at the provider), carry
out the side effect `fleet.supervision.lifecycle_action` names (create the pod, idempotent by the
worker id as its name; or ask the provider to stop it), then ask `fleet.lifecycle.next_transition`
where to go and record that with `store.transition_worker` (compare-and-set: a lost race is
re-read on the next step, never overwritten). The worker's In Progress tasks are requeued after
the provider confirmed the pod gone and before `terminated` is recorded. Then the actor ends.

The warm pool: a drain the Scaler asks with `park` ends in `stopping` instead of `terminating`; the
step then asks the provider to stop the pod (idempotent, retried with backoff like a terminate) and
records `stopped` once the pod shows EXITED, after requeueing anything a timed-out drain still held.
A stopped pod is watched slowly (every `fleet.supervision.STOPPED_POLL_S`, only for vanishing) until the Scaler asks
`request_resume` (a `resuming` transition fenced by its lease epoch, like a drain), whereupon the
provider is asked to resume it once; the worker is `active` again at its first heartbeat after the
resume. A resume the provider refuses (the host's GPUs were taken) is the provider error that sends
the worker to `error`, then `terminating`; the Scaler's `request_retire` (fenced like a resume)
terminates a stopped pod.
The trace goes on across stop and resume: phases `stop`, `stopped` and `resume`, and a transition
span for each move, in the same lifecycle trace.

A terminate the provider refuses is a recorded state, not a failed step: the reason goes on the
worker's record (a `terminate_failed` note in `worker_events`, shown by `explain --worker`) and the
call is tried again with exponential backoff (`fleet.supervision.after_failure`), observing the pod
in between. `health()` returns facts (last completed step, its age, failures in a row, the last
error) and a verdict (`fleet.supervision.loop_health`), never a bare True.

A database outage is ridden out, never acted on: a step that cannot read the database changes
nothing (the pod is kept, a drain or terminate request waits in memory and is carried out, written
first as always, once the database answers), and the loop tries again with capped, jittered backoff
(`fleet.supervision.Outage`; `health()` says since when and how many attempts). Heartbeat silence
is then judged from the database's return, not from the last heartbeat before it: the worker could
not heartbeat meanwhile. And when many workers look lost at the same moment (more than
`scaling.mass_silence_share`), that is an infrastructure fault: it is noted on the worker's record,
nobody is terminated for it, and it is re-checked after `scaling.mass_silence_grace_s`.

Why transitions need no lease epoch (only a drain carries one): every transition is a
compare-and-set on the row's status, chosen by the pure state machine from facts about this one pod
(provider status, heartbeat, tasks), and legal whoever leads. One lifecycle per worker exists by
name (`get_if_exists`); should a partitioned old incarnation still run, a write it computed from a
stale read finds another status and is refused (False), and `terminated` is never left. A drain is
different: it carries out a scaling decision, so it is fenced by the epoch of the Scaler that made it.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors import _telemetry
from cloud import base as cloud
from config.settings import OrchestratorSettings
from fleet import lifecycle as machine
from fleet import supervision
from fleet.models import WorkerState, WorkerView
from store import base as store_base

logger = logging.getLogger(__name__)

# How the actors open their store and provider (injected by tests, `_default_*` otherwise).
StoreFactory = Callable[[OrchestratorSettings], store_base.Store]
ProviderFactory = Callable[[OrchestratorSettings], cloud.Provider]

# Provider pod status -> what the state machine sees.
_POD_PHASE = {
    cloud.PodStatus.PENDING: machine.PodPhase.PENDING,
    cloud.PodStatus.RUNNING: machine.PodPhase.RUNNING,
    cloud.PodStatus.EXITED: machine.PodPhase.EXITED,
    cloud.PodStatus.TERMINATED: machine.PodPhase.GONE,
    cloud.PodStatus.UNKNOWN: machine.PodPhase.UNKNOWN,
}

# Trace phase of each (state, pod id recorded) pair: "provision" until the provider answered.
_TRACE_PHASE = {
    (WorkerState.SPAWNING, False): "provision",
    (WorkerState.SPAWNING, True): "boot",
    (WorkerState.ACTIVE, False): "active",
    (WorkerState.ACTIVE, True): "active",
    (WorkerState.DRAINING, False): "drain",
    (WorkerState.DRAINING, True): "drain",
    (WorkerState.STOPPING, False): "stop",
    (WorkerState.STOPPING, True): "stop",
    (WorkerState.STOPPED, False): "stopped",
    (WorkerState.STOPPED, True): "stopped",
    (WorkerState.RESUMING, False): "resume",
    (WorkerState.RESUMING, True): "resume",
    (WorkerState.TERMINATING, False): "terminate",
    (WorkerState.TERMINATING, True): "terminate",
}

# How the trace names the end of a lifecycle, by the code of the reason that ended it.
_ERROR_CODES = frozenset(
    {"spawn_error", "spawn_timeout", "heartbeat_lost", "pod_lost", "drain_lost", "worker_crashed"}
    | {"stop_lost", "stopped_lost", "resume_failed"}
    | {machine.LOST_WITH_TASK}
)
# The status a worker writes into its own row when it dies (reigh: Headless-Wan2GP's guardian).
CRASHED_STATUS = "crashed"


# A failed pod terminate (or stop) is tried again after poll_s, doubling per failure in a row up to this.
_TERMINATE_RETRY_CAP_S = 300.0


# The plain class's own store and provider (tests, a lifecycle outside Ray). The Ray actor is given
# the StoreGateway's instead (actors/remote.py): no pool, no provider client, no SDK import per pod.
# Outside the gateway a lifecycle does one thing at a time, so one connection, two at most.
LIFECYCLE_POOL_MAX_SIZE = 2


def _default_store(settings: OrchestratorSettings) -> store_base.Store:
    from store import factory as stores  # imported when used: a Ray lifecycle's store is the gateway's

    return stores.open_store(settings, pool_max_size=LIFECYCLE_POOL_MAX_SIZE)


def _default_provider(settings: OrchestratorSettings) -> cloud.Provider:
    from cloud import factory as providers  # imported when used: cloud.local, maybe the runpod SDK

    return providers.make_provider(settings)


@dataclass(frozen=True, slots=True)
class PodCredentials:
    """What a pod gets to reach the database (see cloud.spec.pod_env). Secrets: never in a repr."""

    database_url: str | None = None  # a Postgres conninfo (native: with the worker's own login role)
    worker_token: str | None = None  # native on Supabase: the worker's own JWT

    def __repr__(self) -> str:
        return f"PodCredentials(database_url={'***' if self.database_url else None}, token={bool(self.worker_token)})"


def pod_credentials(settings: OrchestratorSettings, store: store_base.Store, worker_id: str) -> PodCredentials:
    """The pod's own credential, made now, before its spec (the same on a second call for the pod).

    Native: a login role of the worker's own in the orchestrator's Postgres (its conninfo with that
    role), or on Supabase a JWT of the worker's own; it can claim, heartbeat, finish the tasks it
    holds and write its logs, nothing else, and is revoked when the worker is terminated. The
    orchestrator's own conninfo goes to a pod only with `database.worker_credentials: shared`, and in
    the reigh profile to a local pod running the stand-in worker without Supabase (the real worker
    gets the app's Supabase URL and keys, see cloud.spec). The embedded server is found running (the
    actor's store opened it), or started, here in the actors layer: a pod spec never starts a database.

    Raises cloud.InvalidSpec when no credential can be made (no CREATEROLE, no JWT secret), naming
    what is missing; DatabaseUnavailable is raised as is (the next step tries again).
    """
    from config.settings import DatabaseBackend, QueueProfile, WorkerCredentials
    from store import credentials
    from store import factory as stores

    database = settings.database
    if settings.queue.profile is QueueProfile.REIGH or database.worker_credentials is WorkerCredentials.SHARED:
        return PodCredentials(database_url=stores.conninfo_for(database))
    ttl_s = database.worker_credential_ttl_s
    try:
        if database.backend is DatabaseBackend.SUPABASE:
            secret = database.supabase_jwt_secret
            if secret is None:
                raise cloud.InvalidSpec(
                    f"no credential for the pod of {worker_id}: a Supabase pod gets a token of its own worker, signed "
                    "with the project's JWT secret: set SUPABASE_JWT_SECRET (or database.worker_credentials: shared "
                    "to hand pods the service-role key, not recommended)"
                )
            issued = store.issue_worker_credential(worker_id, store_base.WorkerCredentialKind.TOKEN, ttl_s)
            return PodCredentials(worker_token=credentials.worker_token(issued, secret.get_secret_value()))
        conninfo = stores.conninfo_for(database)
        assert conninfo is not None, "a postgres or embedded backend has a conninfo"
        issued = store.issue_worker_credential(worker_id, store_base.WorkerCredentialKind.LOGIN, ttl_s)
        return PodCredentials(database_url=credentials.login_conninfo(conninfo, issued))
    except store_base.DatabaseUnavailable:
        raise
    except store_base.StoreError as exc:
        raise cloud.InvalidSpec(f"no credential for the pod of {worker_id}: {exc}") from None


def _exit_ray_actor() -> None:
    """End this actor for good (no restart). Outside Ray (plain-class tests) there is nothing to end."""
    import ray

    if not ray.is_initialized():
        return
    context = ray.get_runtime_context()
    if context.get_actor_id() is None:  # a plain instance in a Ray driver: nothing to end
        return
    ray.kill(context.current_actor, no_restart=True)


@dataclass(frozen=True, slots=True)
class _ScalerRequest:
    """A drain, resume or retire the Scaler asked for: why, its lease epoch (the fence), and whether a
    drained pod is parked (stopped for the warm pool) after it."""

    reason: str
    epoch: int | None
    park: bool = False


@dataclass(frozen=True, slots=True)
class _PodView:
    phase: machine.PodPhase
    pod: cloud.Pod | None = None


# A side effect of one step (see `WorkerLifecycle._ACTIONS`): what the pod looks like afterwards.
_PodAction = Callable[["WorkerLifecycle", store_base.WorkerRow, _PodView], _PodView]


class WorkerLifecycle:
    """Supervises the pod of one worker; state lives in its `workers` row, never only here."""

    def __init__(
        self,
        worker_id: str,
        settings: OrchestratorSettings,
        *,
        store_factory: StoreFactory | None = None,
        provider_factory: ProviderFactory | None = None,
        exit_hook: Callable[[], None] | None = None,
        start: bool = True,
    ) -> None:
        self.worker_id = worker_id
        self._settings = settings
        self._config = settings.scaling
        self._poll_s = min(settings.scaling.heartbeat_interval_s, settings.scaling.cycle_interval_s)
        _telemetry.setup_process(settings, component="worker-lifecycle", identity=worker_id)
        # Opened on first use inside a step, never here: Ray does not restart an actor whose
        # constructor raised, so a database that is slow at start-up would orphan the pod for good.
        # A failed open is logged by the loop and tried again at the next poll.
        self._store_factory = store_factory or _default_store
        self._provider_factory = provider_factory or _default_provider
        self._store_obj: store_base.Store | None = None
        self._provider_obj: cloud.Provider | None = None
        self._exit_hook = exit_hook or _exit_ray_actor
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._finished = threading.Event()
        # Requests from the Scaler or an operator; in memory on purpose: after a restart the Scaler
        # asks again if the decision still stands, and an operator's `down` repeats its request. (A
        # drain's park flag is kept until the drain is over; a lifecycle restarted mid-drain reads
        # it back from the drain's recorded reason.)
        self._drain_request: _ScalerRequest | None = None
        self._resume_request: _ScalerRequest | None = None
        self._retire_request: _ScalerRequest | None = None
        self._terminate_requested = False
        self._provider_error: str | None = None
        self._state: WorkerState | None = None
        self._state_since: float | None = None
        self._trace: _telemetry.SafeTrace | None = None
        self._steps = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_step_at: float | None = None
        # Health facts (wall clock of this process): see health().
        self._started_at = time.time()
        self._completed_steps = 0
        self._last_completed_at: float | None = None
        self._failed_steps_in_a_row = 0
        self._step_started_at: float | None = None
        # The pod terminate that failed, if any: attempts, last error, when to try again (DB clock).
        self._terminate_retry: supervision.Retry | None = None
        # The warm pool, in the current state only (forgotten when the state changes): the stop that
        # failed (retried like a terminate), whether the provider accepted a stop, whether a resume
        # was asked (once: the pod may show EXITED a moment after it).
        self._stop_retry: supervision.Retry | None = None
        self._stop_accepted = False
        self._resume_asked = False
        self._step_now = 0.0  # the database clock of the current step
        # The database out of reach (this process's clock), while it is; see the module docstring.
        self._outage: supervision.Outage | None = None
        # The database clock when the database answered again after an outage: heartbeat silence
        # before it is not held against the worker.
        self._silence_from: float | None = None
        # Heartbeat losses wait until then: an infrastructure fault (many workers silent at once).
        self._silence_hold_until: float | None = None
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def __repr__(self) -> str:
        return f"WorkerLifecycle({self.worker_id})"

    @property
    def _store(self) -> store_base.Store:
        if self._store_obj is None:
            self._store_obj = self._store_factory(self._settings)
        return self._store_obj

    @property
    def _provider(self) -> cloud.Provider:
        if self._provider_obj is None:
            self._provider_obj = self._provider_factory(self._settings)
        return self._provider_obj

    @property
    def _followed_trace(self) -> _telemetry.SafeTrace:
        """The lifecycle trace, opened by `_follow` at the start of every step."""
        assert self._trace is not None, "a step follows the row before it acts"
        return self._trace

    # --- methods called through Ray (short; the loop runs in its own thread) ---------------------
    def start(self) -> None:
        """Start the supervision loop (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name=f"lifecycle-{self.worker_id}", daemon=True)
        self._thread.start()

    def drain(self, reason: str, epoch: int | None = None, park: bool = False) -> bool:
        """The Scaler's scale-down: the next step moves an active worker to draining (fenced by epoch).
        With `park`, the drained pod is stopped for the warm pool instead of terminated."""
        logger.info("drain%s requested for %s: %s", " into the warm pool" if park else "", self.worker_id, reason)
        self._drain_request = _ScalerRequest(reason, epoch, park)
        self._wake.set()
        return True

    def request_resume(self, reason: str, epoch: int | None = None) -> bool:
        """The Scaler's scale-up from the warm pool: the next step resumes a stopped worker's pod
        (a stopped -> resuming transition fenced by epoch, like a drain)."""
        logger.info("resume requested for %s: %s", self.worker_id, reason)
        self._resume_request = _ScalerRequest(reason, epoch)
        self._wake.set()
        return True

    def request_retire(self, reason: str, epoch: int | None = None) -> bool:
        """The Scaler takes a stopped worker out of the warm pool: the next step terminates its pod (a
        stopped -> terminating transition fenced by epoch, like a resume)."""
        logger.info("retire requested for %s: %s", self.worker_id, reason)
        self._retire_request = _ScalerRequest(reason, epoch)
        self._wake.set()
        return True

    def request_terminate(self, reason: str = "operator") -> bool:
        """An operator's `down --terminate-pods`: drain a busy worker, stop an idle or booting one."""
        logger.info("terminate requested for %s: %s", self.worker_id, reason)
        self._terminate_requested = True
        self._wake.set()
        return True

    def status(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "state": self._state.value if self._state else None,
            "steps": self._steps,
            "last_step_at": self._last_step_at,
            "last_error": self._last_error,
            "drain_requested": self._drain_request is not None,
            "park_requested": self._drain_request is not None and self._drain_request.park,
            "resume_requested": self._resume_request is not None,
            "terminate_requested": self._terminate_requested,
            "finished": self._finished.is_set(),
            "loop_alive": self._thread is not None and self._thread.is_alive(),
            "pid": os.getpid(),
            "health": self._health(),
        }

    def health(self) -> dict[str, Any]:
        """Facts and a verdict (see `fleet.supervision.loop_health`); a loop thread that died (it
        should not) while the worker is not finished is started again."""
        report = self._health()
        if not self._finished.is_set() and not self._stop.is_set():
            self.start()
        return report

    def _health(self) -> dict[str, Any]:
        retry = self._terminate_retry
        failures = {"step": self._failed_steps_in_a_row, "terminate": retry.attempts if retry is not None else 0}
        if self._stop_retry is not None:
            failures["stop"] = self._stop_retry.attempts
        running = self._step_started_at
        facts = supervision.LoopFacts(
            unit="step",
            started_at=self._started_at,
            completed=self._completed_steps,
            last_completed_at=self._last_completed_at,
            loop_alive=self._thread is not None and self._thread.is_alive(),
            current_phase="step" if running is not None else None,
            current_phase_since=running,
            consecutive_failures=failures,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )
        # Judged against this state's own pause (a stopped pod is polled slowly: that is not stuck).
        pause_s = supervision.step_pause_s(self._state, self._poll_s)
        report = supervision.loop_health(facts, time.time(), interval_s=pause_s)
        report["state"] = self._state.value if self._state else None
        report["finished"] = self._finished.is_set()
        outage = self._outage
        if outage is not None:
            report["database"] = outage.as_dict(time.time())
            report["summary"] = f"{outage.summary()}: the pod is kept, nothing is decided; {report['summary']}"
        if self._finished.is_set():  # the worker ended: nothing left to supervise, nothing stuck
            report.update(ok=True, verdict="finished", summary=f"the worker ended; {report['summary']}")
        if retry is not None:
            report["terminate_retry"] = retry.as_dict(self._step_now or retry.failed_at)
        if self._stop_retry is not None:
            report["stop_retry"] = self._stop_retry.as_dict(self._step_now or self._stop_retry.failed_at)
        return report

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        """Stop the loop (tests, `orchestrator down`); the row and the pod stay as they are."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set() and not self._finished.is_set():
            self._step_started_at = time.time()
            try:
                self.step()
            except store_base.DatabaseUnavailable as exc:
                self._database_unreachable(exc)
            except Exception as exc:  # never let one bad step end the supervision of a pod
                self._failed_steps_in_a_row += 1
                self._last_error = f"step: {type(exc).__name__}: {exc}"
                self._last_error_at = time.time()
                _telemetry.record_error("worker_lifecycle", "step")
                logger.exception("lifecycle step of %s failed", self.worker_id)
            else:
                self._failed_steps_in_a_row = 0
                self._completed_steps += 1
                self._last_completed_at = time.time()
            finally:
                self._step_started_at = None
            if self._finished.is_set():
                break
            pause_s = supervision.step_pause_s(self._state, self._poll_s)
            self._wake.wait(supervision.outage_wait_s(self._outage, time.time(), default_s=pause_s))
            self._wake.clear()
        if self._finished.is_set() and not self._stop.is_set():
            self._close()
            self._exit_hook()

    def _database_unreachable(self, exc: store_base.DatabaseUnavailable) -> None:
        """A step that could not read or write the database: nothing was decided from it; try again
        after the outage's backoff. One WARNING line per try, no traceback (it is no bug of ours)."""
        self._outage = supervision.after_outage_failure(
            self._outage,
            time.time(),
            str(exc),
            base_s=min(1.0, self._poll_s),
            cap_s=self._settings.database.outage_backoff_cap_s,
            jitter=random.random(),
        )
        self._failed_steps_in_a_row += 1
        self._last_error = f"step: {type(exc).__name__}: {exc}"
        self._last_error_at = time.time()
        _telemetry.record_error("worker_lifecycle", "database_unreachable")
        logger.warning(
            "%s: %s; supervision of %s waits (the pod is kept, nothing is decided): %s",
            self.worker_id,
            self._outage.summary(),
            self._state.value if self._state else "the worker",
            exc,
        )

    def _database_back(self, now: float) -> None:
        """The first read after an outage: silence is judged from now on (database clock)."""
        outage = self._outage
        if outage is None:
            return
        self._outage = None
        self._silence_from = now
        waited = [f"{self._state.value if self._state else 'unknown'} worker supervised without decisions"]
        if self._drain_request is not None:
            waited.append("a drain request, carried out now")
        if self._resume_request is not None:
            waited.append("a resume request, carried out now")
        if self._terminate_requested:
            waited.append("a terminate request, carried out now")
        record = supervision.outage_record(outage, time.time(), waited)
        logger.warning("%s: %s; its heartbeat silence counts from now", self.worker_id, record.reason())

    def step(self) -> None:
        """Observe, act, transition: one pass. Public so tests can drive a plain instance."""
        self._steps += 1
        now = self._store.now().timestamp()
        self._last_step_at = now
        self._step_now = now
        row = self._store.get_worker(self.worker_id)
        self._database_back(now)  # after a real read (`now` may come from the gateway's cached offset)
        if row is None:
            logger.error("worker %s has no row: nothing to supervise", self.worker_id)
            self._finished.set()
            return
        self._follow(row, now)
        if row.status.is_terminal():
            self._finished.set()
            return
        view = self._observe_pod(row)
        action = supervision.lifecycle_action(
            row.status,
            view.phase,
            self._provider_error,
            terminate_due=supervision.retry_due(self._terminate_retry, now),
            stop_due=not self._stop_accepted and supervision.retry_due(self._stop_retry, now),
            resume_due=not self._resume_asked,
        )
        view = self._ACTIONS[action](self, row, view)
        drain = self._drain_request
        obs = machine.Observation(
            pod_phase=view.phase,
            last_heartbeat_at=row.last_heartbeat_at.timestamp() if row.last_heartbeat_at else None,
            tasks_in_progress=self._tasks_held(row, view),
            drain_requested=drain is not None,
            terminate_requested=self._terminate_requested,
            park_requested=drain is not None and drain.park,
            resume_requested=self._resume_request is not None,
            retire_requested=self._retire_request is not None,
            stop_accepted=self._stop_accepted,
            provider_error=self._provider_error,
            worker_reported_crash=row.reported_status == CRASHED_STATUS,
            silence_counts_from=self._silence_from,
        )
        transition = machine.next_transition(
            row.status,
            obs,
            now=now,
            created_at=row.created_at.timestamp(),
            state_since=self._state_since if self._state_since is not None else now,
            config=self._config,
        )
        if transition is not None and transition.heartbeat_silence:
            transition = self._unless_fleet_silent(transition, now)
        if transition is not None:
            self._carry_out(row, transition, now)

    def _unless_fleet_silent(self, transition: machine.Transition, now: float) -> machine.Transition | None:
        """A heartbeat loss stands unless many workers look lost at once (an infrastructure fault:
        noted on this worker's record, nobody terminated for it, re-checked after a grace period)."""
        if supervision.silence_held(self._silence_hold_until, now):
            return None
        config = self._config
        views = [
            WorkerView(
                id=r.id,
                state=r.status,
                created_at=r.created_at.timestamp(),
                promoted_at=r.promoted_at.timestamp() if r.promoted_at else None,
                last_heartbeat_at=r.last_heartbeat_at.timestamp() if r.last_heartbeat_at else None,
            )
            for r in self._store.list_workers()
        ]
        fleet = supervision.fleet_silence(
            views,
            now,
            timeout_s=config.heartbeat_timeout_s,
            counts_from=self._silence_from,
            share=config.mass_silence_share,
            min_workers=config.mass_silence_min_workers,
        )
        self._silence_hold_until, note = supervision.hold_after(fleet, now, config.mass_silence_grace_s)
        if note is None:
            return transition
        logger.warning("%s: %s (instead of: %s)", self.worker_id, note, transition.reason)
        self._note(note, {"infrastructure_fault": {"silent": list(fleet.silent), "expected": fleet.expected}})
        return None

    # --- observing ----------------------------------------------------------------------------------
    def _tasks_held(self, row: store_base.WorkerRow, view: _PodView) -> int:
        """Tasks the worker holds, counted after the pod was seen when the pod is dead.

        The row was read before the pod: a worker that claimed a task in between and died under it
        at once (a poison task) would look idle, and its loss would count against the fleet instead
        of the task (fleet.lifecycle: lost_with_task). A dead pod claims nothing more, so a count
        read after seeing it dead is final.
        """
        if view.phase not in (machine.PodPhase.EXITED, machine.PodPhase.GONE):
            return row.tasks_in_progress
        fresh = self._store.get_worker(self.worker_id)
        return fresh.tasks_in_progress if fresh is not None else row.tasks_in_progress

    def _follow(self, row: store_base.WorkerRow, now: float) -> None:
        """Keep the in-memory state, its start time and the trace phase in step with the row."""
        if self._trace is None:
            self._trace = _telemetry.lifecycle_trace(row.trace_context, self.worker_id)
        if row.status is self._state:
            return
        self._state_since = self._entered_at(row, now)
        self._state = row.status
        if row.status is WorkerState.DRAINING and self._drain_request is None:
            self._drain_request = self._recorded_park()
        self._stop_retry, self._stop_accepted, self._resume_asked = None, False, False
        phase = _TRACE_PHASE.get((row.status, row.pod_id is not None))
        if phase is not None:
            self._trace.begin_phase(phase)

    def _entered_at(self, row: store_base.WorkerRow, now: float) -> float:
        """When the row entered its current state (after a restart too): its `status_since`, kept from
        its events by the database; on a row older than that column, its newest worker_events row.
        Notes (from = to: a failed terminate, an extra pod terminated) are not entries into a state."""
        if row.status_since is not None:
            return row.status_since.timestamp()
        return max((e.at.timestamp() for e in self._moves_into(row.status)), default=now)

    def _moves_into(self, state: WorkerState) -> list[store_base.WorkerEvent]:
        """The worker's recorded moves into `state` (notes, from = to, are no move)."""
        events = self._store.list_worker_events(worker_id=self.worker_id)
        return [e for e in events if e.to_status == state.value and e.from_status != e.to_status]

    def _recorded_park(self) -> _ScalerRequest | None:
        """The park of a drain this process did not see asked (it restarted mid-drain), read back from
        the worker's newest move into draining: the pod is stopped for the warm pool as asked."""
        newest = max(self._moves_into(WorkerState.DRAINING), key=lambda e: e.at, default=None)
        if newest is None or not machine.drain_parks(newest.reason):
            return None
        logger.info("%s: restarted mid-drain; the drain parks its pod (%s)", self.worker_id, newest.reason)
        return _ScalerRequest(newest.reason, None, park=True)

    def _observe_pod(self, row: store_base.WorkerRow) -> _PodView:
        if row.pod_id is None:
            return self._pod_by_name(row)
        try:
            pod = self._provider.get(row.pod_id)
        except cloud.NotFound:
            return _PodView(machine.PodPhase.GONE)
        except cloud.ProviderError as exc:
            _telemetry.record_error("worker_lifecycle", "pod_get")
            logger.warning("provider could not report pod %s of %s: %s", row.pod_id, self.worker_id, exc)
            return _PodView(machine.PodPhase.UNKNOWN)
        return _PodView(_POD_PHASE[pod.status], pod)

    def _pod_by_name(self, row: store_base.WorkerRow) -> _PodView:
        """No pod id recorded. Spawning: not created yet (NONE). Later: look it up by its name."""
        if row.status is WorkerState.SPAWNING:
            return _PodView(machine.PodPhase.NONE)
        try:
            pods = [p for p in self._provider.list(self._settings.provider.name_prefix) if p.name == self.worker_id]
        except cloud.ProviderError as exc:
            _telemetry.record_error("worker_lifecycle", "pod_list")
            logger.warning("provider could not list pods for %s: %s", self.worker_id, exc)
            return _PodView(machine.PodPhase.UNKNOWN)
        views = [_PodView(_POD_PHASE[p.status], p) for p in pods]
        return next(iter(views), _PodView(machine.PodPhase.GONE))

    # --- acting ------------------------------------------------------------------------------------
    def _observe_only(self, row: store_base.WorkerRow, view: _PodView) -> _PodView:
        return view

    def _provision(self, row: store_base.WorkerRow, view: _PodView) -> _PodView:
        """Create the pod named after the worker (idempotent) and record its id."""
        try:
            pod = provision_pod(
                self._settings, self._store, self._provider, self.worker_id, row.trace_context, self._followed_trace
            )
        except cloud.ProviderError as exc:
            self._provider_error = f"{type(exc).__name__}: {exc}"
            _telemetry.record_error("worker_lifecycle", "pod_create")
            logger.error("provider could not create the pod of %s: %s", self.worker_id, self._provider_error)
            return view
        return _PodView(_POD_PHASE[pod.status], pod)

    def _terminate_pod(self, row: store_base.WorkerRow, view: _PodView) -> _PodView:
        """Ask the provider to stop the pod, then look again: only a confirmed GONE ends `terminating`.

        A refusal is recorded (a `terminate_failed` note with the reason, the attempt and when the next
        one is) and tried again after a backoff; until then the step only observes the pod."""
        if view.pod is None:
            return self._observe_pod(row)
        self._terminate_retry = self._pod_call(
            "terminate",
            self._provider.terminate,
            view.pod.id,
            self._terminate_retry,
            supervision.terminate_failed_reason,
        )
        return view if self._terminate_retry is not None else self._observe_pod(row)

    def _stop_pod(self, row: store_base.WorkerRow, view: _PodView) -> _PodView:
        """Park the pod (warm pool): ask the provider to stop it, then look again; only EXITED makes the
        worker `stopped`. A refusal is noted (`stop_failed`) and retried after a backoff, like a terminate."""
        if view.pod is None:
            return self._observe_pod(row)
        self._stop_retry = self._pod_call(
            "stop", self._provider.stop, view.pod.id, self._stop_retry, supervision.stop_failed_reason
        )
        self._stop_accepted = self._stop_retry is None
        return view if self._stop_retry is not None else self._observe_pod(row)

    def _resume_pod(self, row: store_base.WorkerRow, view: _PodView) -> _PodView:
        """Start the stopped pod again (once per resume). A refusal (its host's GPUs were taken, the
        pod is gone) is the provider error the state machine ends the resume with: the worker goes to
        error, its pod is terminated, and demand gets a new pod."""
        if view.pod is None:
            return self._observe_pod(row)
        self._resume_asked = True
        try:
            pod = self._provider.resume(view.pod.id)
        except (cloud.CapacityUnavailable, cloud.NotFound, cloud.InvalidSpec) as exc:
            self._provider_error = f"{type(exc).__name__}: {exc}"
            _telemetry.record_error("worker_lifecycle", "pod_resume")
            logger.warning("provider refused to resume pod %s of %s: %s", view.pod.id, self.worker_id, exc)
            return view
        except cloud.ProviderError as exc:
            # A passing fault (rate limit, 5xx, timeout) must not cost the parked pod: asked again on the
            # next step, the resume's own timeout (spawn_timeout_s) bounding the tries.
            self._resume_asked = False
            _telemetry.record_error("worker_lifecycle", "pod_resume")
            logger.warning("resuming pod %s of %s failed, trying again: %s", view.pod.id, self.worker_id, exc)
            return view
        self._followed_trace.set_phase_attributes({"pod.resumed": True, "pod.status": pod.status.value})
        logger.info("pod %s of %s resumed (status %s)", pod.id, self.worker_id, pod.status.value)
        return _PodView(_POD_PHASE[pod.status], pod)

    def _pod_call(
        self,
        name: str,
        call: Callable[[str], None],
        pod_id: str,
        retry: supervision.Retry | None,
        failed_reason: Callable[[str, supervision.Retry, float], str],
    ) -> supervision.Retry | None:
        """`call(pod_id)` (terminate, stop): None when the provider accepted it or the pod is gone
        (observing it says so), else the next retry, noted on the worker's record with `failed_reason`."""
        now = self._step_now
        try:
            call(pod_id)
        except cloud.NotFound:
            return None
        except cloud.ProviderError as exc:
            failed = supervision.after_failure(
                retry, now, f"{type(exc).__name__}: {exc}", base_s=self._poll_s, cap_s=_TERMINATE_RETRY_CAP_S
            )
            self._last_error = f"{name}: {failed.last_error}"
            self._last_error_at = time.time()
            _telemetry.record_error("worker_lifecycle", f"pod_{name}")
            reason = failed_reason(pod_id, failed, now)
            logger.warning("%s: %s", self.worker_id, reason)
            self._note(reason, {f"{name}_failed": failed.as_dict(now)})
            return failed
        return None

    def _note(self, reason: str, metadata: dict[str, Any] | None = None) -> None:
        """A note on the worker's record; a database that fails here fails nothing else."""
        try:
            self._store.note_worker(self.worker_id, reason, metadata=metadata)
        except Exception as exc:
            _telemetry.record_error("worker_lifecycle", "note")
            logger.warning("could not record on %s: %s (%s: %s)", self.worker_id, reason, type(exc).__name__, exc)

    _ACTIONS: dict[supervision.LifecycleAction, _PodAction] = {
        supervision.LifecycleAction.OBSERVE: _observe_only,
        supervision.LifecycleAction.PROVISION: _provision,
        supervision.LifecycleAction.TERMINATE_POD: _terminate_pod,
        supervision.LifecycleAction.STOP_POD: _stop_pod,
        supervision.LifecycleAction.RESUME_POD: _resume_pod,
    }

    def _scaler_request(self, to: WorkerState) -> _ScalerRequest | None:
        """The Scaler's request a transition carries out, if any: a drain, resume or retire is the
        Scaler's write, fenced by its lease epoch."""
        requests = {
            WorkerState.DRAINING: self._drain_request,
            WorkerState.RESUMING: self._resume_request,
            WorkerState.TERMINATING: self._retire_request,
        }
        return requests.get(to)

    def _carry_out(self, row: store_base.WorkerRow, transition: machine.Transition, now: float) -> None:
        request = self._scaler_request(transition.to)
        epoch = request.epoch if request is not None else None
        before = self._BEFORE.get(transition.to)
        if before is not None:
            before(self, row)
        try:
            applied = self._store.transition_worker(
                self.worker_id, row.status, transition.to, transition.reason, epoch=epoch
            )
        except store_base.StaleEpoch:
            # The Scaler that asked for this drain or resume is no longer the leader: forget its request.
            _telemetry.record_error("worker_lifecycle", "stale_epoch")
            logger.warning("%s of %s refused: epoch %s is stale", transition.to.value, self.worker_id, epoch)
            self._drain_request = None if request is self._drain_request else self._drain_request
            self._resume_request = None if request is self._resume_request else self._resume_request
            self._retire_request = None if request is self._retire_request else self._retire_request
            return
        if not applied:
            logger.info(
                "%s: %s -> %s lost a race; re-reading the row", self.worker_id, row.status.value, transition.to.value
            )
            return
        logger.info("%s: %s -> %s (%s)", self.worker_id, row.status.value, transition.to.value, transition.reason)
        self._followed_trace.transition(row.status.value, transition.to.value, transition.reason)
        _telemetry.record_transition(transition)
        # Carried out (or overtaken by another transition); a drain's park flag lasts until the drain is over.
        self._drain_request = self._drain_request if transition.to is WorkerState.DRAINING else None
        self._resume_request = self._retire_request = None
        self._wake.set()  # the next step follows the new state at once
        after = self._AFTER.get(transition.to)
        if after is not None:
            after(self, transition)

    def _requeue_tasks(self, row: store_base.WorkerRow) -> None:
        """The pod is confirmed gone (or stopped): whatever it held In Progress goes back to the queue."""
        count = self._store.requeue_worker_tasks(self.worker_id)
        if count:
            logger.warning(
                "requeued %d task(s) of %s (those at max_task_attempts are Failed instead)", count, self.worker_id
            )

    def _ended(self, transition: machine.Transition) -> None:
        code = machine.reason_code(transition.reason)
        events = self._store.list_worker_events(worker_id=self.worker_id)
        history_codes = {machine.reason_code(e.reason) for e in events}
        outcome = "error" if history_codes & _ERROR_CODES else "ok"
        ended_by = transition.reason if code != "terminated" else ", ".join(sorted(history_codes))
        self._followed_trace.end(outcome, ended_by)
        self._finished.set()

    # A pod confirmed gone or stopped runs nothing more: what it still held (a drain that timed out)
    # goes back to the queue before the state that says so is recorded.
    _BEFORE: dict[WorkerState, Callable[[WorkerLifecycle, store_base.WorkerRow], None]] = {
        WorkerState.TERMINATED: _requeue_tasks,
        WorkerState.STOPPED: _requeue_tasks,
    }
    _AFTER: dict[WorkerState, Callable[[WorkerLifecycle, machine.Transition], None]] = {
        WorkerState.TERMINATED: _ended,
    }

    def _close(self) -> None:
        for what, opened in (("store", self._store_obj), ("provider", self._provider_obj)):
            if opened is None:
                continue
            try:
                opened.close()
            except Exception as exc:  # the actor ends anyway; the connection dies with its process
                _telemetry.record_error("worker_lifecycle", f"close_{what}")
                logger.warning("closing the %s of %s failed: %s: %s", what, self.worker_id, type(exc).__name__, exc)


def provision_pod(
    settings: OrchestratorSettings,
    store: store_base.Store,
    provider: cloud.Provider,
    worker_id: str,
    traceparent: str | None,
    trace: _telemetry.SafeTrace,
) -> cloud.Pod:
    """Create the pod named after the worker (idempotent by name), record its id on the row, and
    move the lifecycle trace from `provision` to `boot`. Raises cloud.ProviderError.

    Called by the WorkerLifecycle (a spawning row without a pod id) and, right after writing the
    row, by the Scaler (see actors/provisioning.py): whichever comes second finds the same pod by
    name, so a crash anywhere between row, create and lifecycle never makes two.
    """
    from cloud import spec as cloud_spec  # imported when used: the Scaler creates pods, a lifecycle rarely

    creds = pod_credentials(settings, store, worker_id)
    spec = cloud_spec.pod_spec_for_worker(
        settings, worker_id, database_url=creds.database_url, worker_token=creds.worker_token, traceparent=traceparent
    )
    pod = provider.create(worker_id, spec)
    metadata = {
        "network_volume": pod.network_volume,
        "ram_tier_gb": pod.ram_tier_gb,
        "ssh_endpoint": pod.ssh_endpoint,
        "cost_per_hour": pod.cost_per_hour,
        "provider": provider.name,
    }
    store.set_worker_pod(worker_id, pod.id, pod.gpu_type, {k: v for k, v in metadata.items() if v is not None})
    logger.info("pod %s created for %s (gpu %s)", pod.id, worker_id, pod.gpu_type)
    trace.set_phase_attributes({"pod.id": pod.id, "pod.gpu_type": pod.gpu_type or ""})
    trace.begin_phase("boot")
    return pod
