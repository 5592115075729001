"""Scaler: one per cluster; observes demand and the fleet, calls the pure policy, carries out its Decision.

Made a Ray actor in actors/remote.py (named `scaler`, detached, max_restarts=-1). The control loop
runs in a thread started from `__init__`, so a restarted Scaler (Ray reruns `__init__` after a
SIGKILL) resumes by itself, and `status()` answers while a cycle is slow.

One cycle is a step function of phases, each in its own `try` with `logger.exception` and timed,
so that no error halts the loop (Ray Serve's `run_control_loop_step`):

1. lease   hold or renew the leader lease; a standby stops here (and says so in `status`). Every
           write below carries the lease epoch, which the database checks (fencing: the check
           locks the lease row, so a takeover cannot slip between a check and its write).
2. pods    passive: the provider's pods with our name prefix, read *before* the rows (see
           `fleet.supervision.reconcile`). A provider that cannot list costs this phase only. A
           timed cycle's list is taken just before the cycle is due, on a thread of its own
           (`_PodPrefetch`), begun after the previous cycle ended: the cycle does not wait for it.
3. sync    passive (Ray autoscaler v2's `Reconciler._sync_from`: observe and record, change
           nothing): live worker rows, the demand snapshot in one query, the database clock and,
           when the pods are known, the reconcile plan (orphans, duplicates).
4. decide  `fleet.policy.decide`; persisted in `scaling_decisions` with inputs, reasons and cycle
           number *before* anything is done about it. Skipped (and said so) only when sync could
           not read the rows or the demand.
5. act     every act of the cycle, each item on its own `try` (one that fails is counted, logged
           and reported; the others go on): the reconcile plan (an orphan pod adopted, or recorded
           as a `terminating` worker whose lifecycle stops it; a duplicate pod or an ended
           worker's pod terminated here, retried with backoff, noted on the worker's record); the
           WorkerLifecycle of every live row (re-attached with get_if_exists, never two); then per
           spawn: a worker id, the lifecycle trace anchor, the worker row (`spawning`, epoch), then
           (off the cycle thread, `provisioning.Provisioner`) the pod's create call and, once it
           returned, its WorkerLifecycle, which owns the pod from then on; per drain: that
           worker's lifecycle is asked to drain (a fenced active -> draining transition), and to
           stop its pod for the warm pool afterwards when the decision parks it. The warm pool's
           resumes go first (each named stopped worker's lifecycle asked to resume, fenced like a
           drain), its retirements last (a stopped worker's lifecycle asked to terminate). A
           stopped worker's row is live: its lifecycle is re-attached like any other, and its
           pod (EXITED at the provider) is no orphan.
6. retention (leader) at most every `retention.interval_s`: the orchestrator's own rows older than
           their window (settings.retention) deleted in small batches, each a short transaction
           that locks only the rows it deletes (never the reigh app's tables).
7. probe   the injected `shipper_probe`: LogShipper health, restarted through Ray when stuck.
8. metrics Ray metrics of the cycle.

`health()` returns facts, never a bare True: the last completed cycle and its age, failures in a
row per phase (and per pod terminate being retried), the last error, the phase running now, and a
verdict in words (`fleet.supervision.loop_health`: ok, failing, stuck, stopped). A watchdog thread
exports the seconds since the last completed cycle every second, so a loop stuck in a phase shows
as a rising gauge, not a frozen one.

Identity: each incarnation holds the lease as `<lineage>#<random>`, where the lineage is the holder
given (stable across Ray restarts of one actor). Its first lease call may take the lease at once
from an earlier incarnation of the same lineage, always with a new epoch: a restarted Scaler does
not wait out its own lease, and a partitioned predecessor never shares its epoch.

Why the Scaler makes the create call (measured with bench/reaction.py): starting a WorkerLifecycle
actor costs a Ray worker process (~1.6 s on this machine) before it could call the provider, so
insert -> create took p50 ~2.9 s. The create is idempotent by the worker id as the pod's name, so
the Scaler calls it right after writing the row (intent first, never the other way round) in a
small thread pool, records the pod id like the lifecycle would (`lifecycle.provision_pod`, inside
the lifecycle trace's provision phase), then starts the lifecycle. A lifecycle is never started
while the Scaler's create for that worker is in flight (`supervision.lifecycles_to_ensure`), so
two creates for one name never overlap; if the Scaler dies anywhere in between, the next sync
starts the lifecycle, which finds the row without a pod id and calls create, which finds the pod
by name. On RunPod, where create itself takes seconds, this also keeps the cycle from blocking.

A database outage is an incident to ride out (see README "When the database goes away"): a cycle
whose lease call cannot reach the database runs none of the leader phases (no spawn, drain or
terminate from facts read before the outage), the loop tries again with capped, jittered backoff,
and `status()` says "database unreachable since HH:MM:SS (N attempts)". Once the database answers,
the outage is recorded as one `database_outage` orchestrator event (start, end, what waited) for
`explain`, before anything else is written. The store opens even while the database is down
(`require_reachable=False`), so a Scaler that Ray restarts during an outage comes up and waits.

Between cycles it waits for Postgres LISTEN/NOTIFY on task changes, at most `cycle_interval_s`;
cycles woken by a notification are at least `wake_debounce_s` apart, and reuse the provider's pod
list while it is younger than `provider_list_interval_s` (the provider is listed on its own cadence).
On becoming leader (first start, restart, takeover) it rebuilds its memory from the database:
the breaker's spawn outcomes from `worker_events`, the last scale-up from `scaling_decisions`.

Nothing here calls Ray: the WorkerLifecycle directory and the LogShipper probe are injected
(actors/remote.py wires the Ray ones), so tests drive a plain instance with fakes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry.trace import Span

from actors import _telemetry, names, provisioning
from actors import lifecycle as lifecycle_mod
from cloud import base as cloud
from cloud import factory as providers
from config.settings import OrchestratorSettings, QueueProfile
from fleet import learning, policy, supervision
from fleet.models import Decision, DemandSnapshot, FleetHistory, SpawnOutcome, WorkerState, WorkerView
from store import base as store_base
from store import factory as stores

logger = logging.getLogger(__name__)

LEASE_NAME = "scaler"
# Shortest pause between two cycles when notifications arrive back to back: a burst of task
# changes folds into one cycle instead of spinning on 2 cores.
_MIN_CYCLE_GAP_S = 0.05
# How long `stop` waits for create calls in flight before giving the lease up.
_PROVISION_DRAIN_TIMEOUT_S = 30.0
# How often the watchdog exports the seconds since the last completed cycle.
_WATCH_EVERY_S = 1.0
# A pod terminate the Scaler makes (a duplicate, an ended worker's pod) that failed is tried again
# after one cycle interval, doubling per failure in a row up to this.
_POD_RETRY_CAP_S = 300.0
# The next timed cycle's pod list begins this long before the cycle is due, plus twice the time the
# slowest of the last `_PREFETCH_MEMORY` lists took (at most half a cycle interval ahead); a cycle
# takes it when it began at most `_PREFETCH_SLACK_S` earlier than that, else it lists itself.
_PREFETCH_MARGIN_S = 0.05
_PREFETCH_MEMORY = 5
_PREFETCH_SLACK_S = 0.5
# Why decide did nothing when sync could not give it its inputs.
_NO_INPUT = "skipped: no worker rows or demand this cycle (the sync phase failed)"

_T = TypeVar("_T")
# Failures of the outside world, said in one line each cycle (no traceback: it would only show our
# own retry code): the provider out of reach, throttling, refusing the key or out of capacity; the
# database out of reach.
_EXPECTED_FAILURES = (
    cloud.Transient,
    cloud.RateLimited,
    cloud.AuthFailed,
    cloud.CapacityUnavailable,
    store_base.DatabaseUnavailable,
)

StoreFactory = lifecycle_mod.StoreFactory
ProviderFactory = lifecycle_mod.ProviderFactory


def worker_view(row: store_base.WorkerRow) -> WorkerView:
    """What the policy sees of a worker row. (Positional and inline: made for every row every cycle.)"""
    promoted, beat, idle, started = row.promoted_at, row.last_heartbeat_at, row.idle_since, row.task_started_at
    since = row.status_since
    return WorkerView(
        row.id,
        row.status,
        row.created_at.timestamp(),
        row.gpu_type,
        None if promoted is None else promoted.timestamp(),
        None if beat is None else beat.timestamp(),
        row.tasks_in_progress,
        None if idle is None else idle.timestamp(),
        row.pod_id,
        None if started is None else started.timestamp(),
        row.task_type,
        None if since is None else since.timestamp(),
    )


class _EventWindow:
    """`worker_events` of the failure window, fetched incrementally, for the breaker's outcomes."""

    def __init__(self) -> None:
        self._events: dict[int, tuple[str, float, str | None, str, str]] = {}
        self._since: datetime | None = None
        # The spawn outcomes of the events as they were when last asked: rebuilt only when the window
        # changed (at 1,000 workers the window holds thousands of events, most cycles none new).
        self._outcomes: list[SpawnOutcome] | None = None

    def refresh(
        self, store: store_base.Store, now: float, window_s: float
    ) -> list[tuple[str, float, str | None, str, str]]:
        since = self._since or datetime.fromtimestamp(now - window_s, tz=UTC)
        for e in store.list_worker_events(since=since):
            if e.id not in self._events:
                self._outcomes = None
            self._events[e.id] = (e.worker_id, e.at.timestamp(), e.from_status, e.to_status, e.reason)
            self._since = max(self._since or e.at, e.at)  # inclusive `since`: ids deduplicate
        cutoff = now - window_s
        if any(v[1] < cutoff for v in self._events.values()):
            self._events = {k: v for k, v in self._events.items() if v[1] >= cutoff}
            self._outcomes = None
        return list(self._events.values())

    def outcomes(self) -> list[SpawnOutcome]:
        """`policy.outcomes_from_events` of the window as of the last refresh."""
        if self._outcomes is None:
            self._outcomes = policy.outcomes_from_events(self._events.values())
        return self._outcomes


@dataclasses.dataclass(frozen=True)
class _PodList:
    """One provider list: when it began (monotonic), how long it took, and the pods or what failed."""

    started: float
    took_s: float
    pods_at: float | None = None  # the database clock just before the list call
    pods: list[cloud.Pod] | None = None
    error: Exception | None = None


class _PodPrefetch:
    """The provider's pod list for the next timed cycle, taken on a thread of its own just before
    that cycle is due, so the cycle does not wait for the provider (at 1,000 pods the list is most
    of a cycle's time). `take` hands a cycle only a list that began after the previous cycle ended
    and at most `max_age_s` ago; otherwise the cycle lists itself, as before."""

    def __init__(self, list_pods: Callable[[], tuple[float, list[cloud.Pod]]], name: str) -> None:
        self._list_pods = list_pods
        self._name = name
        self._cond = threading.Condition()
        self._due: float | None = None  # monotonic time the next list starts
        self._since: float | None = None  # only a list begun at or after this serves the next cycle
        self._running_since: float | None = None
        self._result: _PodList | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def schedule(self, due: float) -> None:
        """The next cycle's list begins at monotonic time `due`; any list begun before now is spent."""
        with self._cond:
            self._closed = False  # a Scaler started again after a stop
            self._due, self._since, self._result = due, time.monotonic(), None
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"pod-prefetch-{self._name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._due = self._since = self._result = None

    def close(self) -> None:
        """Nothing more is listed (a list in flight ends on its own); `schedule` starts again."""
        with self._cond:
            self._closed = True
            self._due = self._since = self._result = None
            self._cond.notify_all()

    def take(self, max_age_s: float) -> _PodList | None:
        """The list scheduled for this cycle when it began at most `max_age_s` ago (waiting for it
        while it is in flight), else None; a list not yet begun is cancelled either way."""
        with self._cond:
            since = self._since
            if since is not None and self._running_since is not None and self._running_since >= since:
                while self._running_since is not None and not self._closed:
                    self._cond.wait()
            result = self._result
            self._due = self._since = self._result = None
        if result is None or since is None or result.started < since:
            return None
        return result if time.monotonic() - result.started <= max_age_s else None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._due is None or self._due > time.monotonic()):
                    self._cond.wait(None if self._due is None else self._due - time.monotonic())
                if self._closed:
                    self._thread = None
                    return
                self._due = None
                started = self._running_since = time.monotonic()
            result = self._list(started)
            with self._cond:
                self._running_since = None
                if self._since is not None and started >= self._since:
                    self._result = result
                self._cond.notify_all()

    def _list(self, started: float) -> _PodList:
        try:
            pods_at, pods = self._list_pods()
        except Exception as exc:  # handed to the cycle, which says so (or lists itself)
            return _PodList(started, time.monotonic() - started, error=exc)
        return _PodList(started, time.monotonic() - started, pods_at=pods_at, pods=pods)


@dataclasses.dataclass
class _Cycle:
    """What one cycle learnt, phase by phase."""

    number: int
    started_at: float
    now: float | None = None
    rows: list[store_base.WorkerRow] | None = None
    snapshot: DemandSnapshot | None = None
    pods: list[cloud.Pod] | None = None  # None: the pods phase failed this cycle
    pods_at: float | None = None  # the database clock just before the pods were listed
    plan: supervision.ReconcilePlan | None = None  # None: pods or rows unknown this cycle
    decision: Decision | None = None
    decision_id: int | None = None
    span: Span | None = None  # the decision span, open from decide to the end of act
    scope: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)
    spawned: list[str] = dataclasses.field(default_factory=list)
    drained: list[str] = dataclasses.field(default_factory=list)  # parked ones too
    resumed: list[str] = dataclasses.field(default_factory=list)  # asked to resume from the warm pool
    retired: list[str] = dataclasses.field(default_factory=list)  # stopped ones asked to terminate
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    malformed: dict[str, str] = dataclasses.field(default_factory=dict)  # worker id -> what is wrong


class Scaler:
    """Keeps the fleet at the policy's size; see the module docstring."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        *,
        holder: str | None = None,
        name: str = names.SCALER_NAME,
        lifecycles: provisioning.LifecycleDirectory,
        store_factory: StoreFactory | None = None,
        provider_factory: ProviderFactory | None = None,
        shipper_probe: Callable[[], object] | None = None,
        pause_after_decide_s: float = 0.0,
        stuck_after_s: float | None = None,
        start: bool = True,
    ) -> None:
        self.name = name
        # See "Identity" in the module docstring: this incarnation's own holder id, in its lineage.
        self.lineage = holder or f"{os.uname().nodename}/pid{os.getpid()}/{name}"
        self.holder = f"{self.lineage}#{secrets.token_hex(4)}"
        self._lease_asked = False  # the first lease call may succeed an earlier incarnation
        self._settings = settings
        self._config = settings.scaling
        _telemetry.setup_process(settings, component="scaler", identity=name)
        self._store = (store_factory or _default_store)(settings)
        self._provider = (provider_factory or _default_provider)(settings)
        self._lifecycles = lifecycles
        self._provisioner = provisioning.Provisioner(settings, self._store, self._provider, self._lifecycles)
        # Called once a cycle (leader or not): the LogShipper's health probe, or None for no probe.
        self._shipper_probe = shipper_probe
        # Test knob: sleep this long after a decision that changes something is persisted and
        # before it is carried out, so a test can SIGKILL the Scaler "right after deciding".
        self._pause_after_decide_s = pause_after_decide_s
        # No completed cycle for this long is "stuck" in health(); None: supervision.stuck_after_s.
        self._stuck_after_s = stuck_after_s
        self._lease: store_base.Lease | None = None  # ours, while we lead
        self._seen_lease: store_base.Lease | None = None  # whoever leads, as last read
        self._history = FleetHistory()
        self._events = _EventWindow()
        self._cycle = 0
        self._last_liveness_log_at = 0.0
        self._last_record_key: tuple[object, ...] | None = None
        self._report: dict[str, Any] = {"cycle": 0, "role": "starting"}
        self._last_decision: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        # Health facts (wall clock of this process); see health().
        self._started_at = time.time()
        self._completed_cycles = 0
        self._last_completed_at: float | None = None
        self._phase_now: tuple[str, float] | None = None
        self._phase_failures: dict[str, int] = {phase: 0 for phase, _, _ in self._PHASES}
        self._last_error: tuple[str, float] | None = None
        # Pod terminates made here that failed, by pod id: retried with backoff (DB clock).
        self._pod_retries: dict[str, supervision.Retry] = {}
        # Wake-ups (see _debounce and _phase_pods): whether this cycle was woken by a notification,
        # when the last such cycle started, how many there were; the provider's last pod list
        # (monotonic time read, database time read, pods) and how many lists were made.
        self._woken = False
        self._last_woken_at: float | None = None
        self._wakeups = 0
        self._listed: tuple[float, float, list[cloud.Pod]] | None = None
        self._provider_lists = 0
        # How long the last few provider lists took: the slowest sets how early the next one begins.
        self._list_took_s: collections.deque[float] = collections.deque(maxlen=_PREFETCH_MEMORY)
        self._prefetch = _PodPrefetch(self._list_pods, name)
        self._retention_at: float | None = None  # monotonic time of the last retention run
        # The database out of reach (this process's clock), while it is; the record of the last
        # one until it is written; cycles it cost; what the last sync saw (for "what waited").
        self._outage: supervision.Outage | None = None
        self._outage_cycles = 0
        self._outages_to_record: list[supervision.OutageRecord] = []
        self._last_seen: tuple[list[str], DemandSnapshot | None] = ([], None)
        # The database clock of the first sync after an outage (heartbeat silence counts from it),
        # and whether the infrastructure fault going on now (many workers silent) is on record.
        self._back_pending = False
        self._silence_from: float | None = None
        self._fault_recorded = False
        if start:
            self.start()

    def __repr__(self) -> str:
        return f"Scaler({self.name}, provider={self._provider.name}, db={self._store.describe()})"

    # --- methods called through Ray (short) --------------------------------------------------------
    def start(self) -> None:
        """Start the control loop (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"scaler-{self.name}", daemon=True)
        self._thread.start()
        if self._watchdog is None or not self._watchdog.is_alive():
            self._watchdog = threading.Thread(target=self._watch, name=f"scaler-watch-{self.name}", daemon=True)
            self._watchdog.start()

    def stop(self, reason: str = "Scaler.stop() called") -> None:
        """Stop the loop and give the lease up so a successor need not wait for it to expire. A leader
        records the stop with `reason`, so `explain` says "stopped", not "silent", for the time after."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._config.cycle_interval_s + 30)
        self._prefetch.close()
        self._provisioner.wait(_PROVISION_DRAIN_TIMEOUT_S)
        lease = self._lease
        self._lease = None
        if lease is not None:
            # The stop first, while the lease is still ours: a standby that takes it next records its
            # start after this stop, never before it.
            self._record_run_event(store_base.OrchestratorEventKind.STOPPED, reason)
            try:
                self._store.release_leader_lease(LEASE_NAME, self.holder, lease.epoch)
            except Exception:
                _telemetry.record_error("scaler", "lease_release")
                logger.exception("releasing the leader lease failed; it expires in %.0fs", self._settings.lease_ttl_s)

    def _record_run_event(self, kind: store_base.OrchestratorEventKind, reason: str) -> None:
        """A start or clean stop of the orchestrator, for `explain`; a failure is counted and logged, never raised."""
        try:
            self._store.record_orchestrator_event(kind, self.holder, reason)
        except Exception:
            _telemetry.record_error("scaler", f"record_{kind.value}")
            logger.exception("recording the orchestrator's %s (%s) failed", kind.value, reason)

    def status(self) -> dict[str, Any]:
        """Leader or standby, epoch, the last cycle (time, phases, errors) and the last decision."""
        lease = self._lease
        seen = self._seen_lease
        return {
            **self._report,
            "name": self.name,
            "holder": self.holder,
            "role": "leader" if lease is not None else ("standby" if seen is not None else "starting"),
            "epoch": lease.epoch if lease is not None else None,
            "leader_holder": seen.holder if seen is not None else None,
            "leader_epoch": seen.epoch if seen is not None else None,
            "lease_expires_at": seen.expires_at.isoformat() if seen is not None else None,
            "last_decision": self._last_decision,
            "breaker": _breaker_dict(self._history),
            "lifecycles": len(self._lifecycles),
            "loop_alive": self._thread is not None and self._thread.is_alive(),
            "pid": os.getpid(),
            "health": self._health(),
            "pod_retries": self._pod_retry_report(),
            "database": self._database_report(),
        }

    def _database_report(self) -> dict[str, Any]:
        outage = self._outage
        if outage is None:
            return {"reachable": True}
        return {**outage.as_dict(time.time()), "cycles_without_decision": self._outage_cycles}

    def health(self) -> dict[str, Any]:
        """Facts and a verdict (see `fleet.supervision.loop_health`). A loop that died (it should not)
        is started again; the answer describes it as it was found."""
        report = self._health()
        self.start()
        return report

    def _health(self) -> dict[str, Any]:
        phase = self._phase_now
        error = self._last_error
        retries = dict(self._pod_retries)
        failures = {**self._phase_failures, **{f"terminate {pod}": r.attempts for pod, r in retries.items()}}
        facts = supervision.LoopFacts(
            unit="cycle",
            started_at=self._started_at,
            completed=self._completed_cycles,
            last_completed_at=self._last_completed_at,
            loop_alive=self._thread is not None and self._thread.is_alive(),
            current_phase=phase[0] if phase is not None else None,
            current_phase_since=phase[1] if phase is not None else None,
            consecutive_failures=failures,
            last_error=error[0] if error is not None else None,
            last_error_at=error[1] if error is not None else None,
        )
        report = supervision.loop_health(
            facts, time.time(), interval_s=self._config.cycle_interval_s, stuck_after=self._stuck_after_s
        )
        outage = self._outage
        if outage is not None:
            report["database"] = outage.as_dict(time.time())
            report["summary"] = f"{outage.summary()}: no decision until it is back; {report['summary']}"
        return report

    def _pod_retry_report(self) -> dict[str, Any]:
        retries = dict(self._pod_retries)
        now = time.time()
        return {pod: r.as_dict(now) for pod, r in retries.items()}

    def pid(self) -> int:
        return os.getpid()

    # --- the loop ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.step()
            except Exception:  # step() already isolates its phases; this is the last resort
                _telemetry.record_error("scaler", "cycle")
                logger.exception("scaler cycle failed")
            remaining = self._config.cycle_interval_s - (time.monotonic() - started)
            if self._outage is not None:  # the database is away: capped, jittered backoff instead
                remaining = supervision.outage_wait_s(self._outage, time.time(), default_s=remaining)
            self._woken = self._wait(max(remaining, _MIN_CYCLE_GAP_S))
            if self._woken:
                self._debounce()

    def _watch(self) -> None:
        """Export the seconds since the last completed cycle, also (above all) while a cycle hangs."""
        while not self._stop.wait(_WATCH_EVERY_S):
            since = self._last_completed_at if self._last_completed_at is not None else self._started_at
            _telemetry.record_seconds_since_cycle(time.time() - since)

    def _debounce(self) -> None:
        """A cycle woken by a notification starts at least `wake_debounce_s` after the previous
        such cycle: a stream of inserts (each notifies) wakes the Scaler at most once per that gap.
        Notifications that arrive meanwhile wait on the LISTEN connection and wake the next wait."""
        gap = self._config.wake_debounce_s
        now = time.monotonic()
        if self._last_woken_at is not None and gap > 0:
            left = self._last_woken_at + gap - now
            if left > 0:
                self._stop.wait(left)
        self._last_woken_at = time.monotonic()
        self._wakeups += 1

    def _wait(self, timeout_s: float) -> bool:
        """Until a task changes (leader only) or the interval passes; True when a notification woke it."""
        if self._lease is None or self._outage is not None or self._stop.is_set():
            self._stop.wait(timeout_s)
            return False
        try:
            return self._store.wait_for_task_change(timeout_s)
        except store_base.DatabaseUnavailable as exc:  # the next cycle's lease call finds the outage
            _telemetry.record_error("scaler", "wait_for_task_change")
            logger.warning("waiting for task notifications failed (%s); sleeping instead", exc)
            self._stop.wait(timeout_s)
        except Exception:
            _telemetry.record_error("scaler", "wait_for_task_change")
            logger.exception("waiting for task notifications failed; sleeping instead")
            self._stop.wait(timeout_s)
        return False

    def step(self) -> dict[str, Any]:
        """One cycle; returns its report. Public so tests can drive a plain instance."""
        self._cycle += 1
        started = time.monotonic()
        cycle = _Cycle(number=self._cycle, started_at=time.time())
        with cycle.scope:
            self._run_phases(cycle)
        if cycle.spawned or (cycle.plan is not None and (cycle.plan.orphans or cycle.plan.duplicates)):
            self._listed = None  # pods were made or acted on: the next cycle lists them afresh
        if self._lease is not None and self._outage is None and not self._stop.is_set():
            self._prefetch.schedule(started + self._config.cycle_interval_s - self._prefetch_lead_s())
        else:
            self._prefetch.cancel()
        self._completed_cycles += 1
        self._last_completed_at = time.time()
        self._report = {
            "cycle": cycle.number,
            "last_cycle_at": cycle.started_at,
            "last_cycle_s": sum(cycle.timings.values()),
            "phase_s": {k: round(v, 6) for k, v in cycle.timings.items()},
            "phase_errors": cycle.errors,
            "phase_skipped": cycle.skipped,
            "malformed_rows": cycle.malformed,
            "spawned": cycle.spawned,
            "drained": cycle.drained,
            "resumed": cycle.resumed,
            "retired": cycle.retired,
        }
        self._log_liveness(cycle)
        return self._report

    def _log_liveness(self, cycle: _Cycle) -> None:
        """One line per cycle interval even when nothing changes: silence in system_logs then means
        the orchestrator was down, not idle (the replaced system could not tell the two apart)."""
        if cycle.started_at - self._last_liveness_log_at < self._settings.scaling.cycle_interval_s:
            return
        self._last_liveness_log_at = cycle.started_at
        logger.info(
            "cycle %d completed in %.0f ms (%s): spawned %d, drained %d%s",
            cycle.number,
            1000 * sum(cycle.timings.values()),
            "leader" if self._lease is not None else "standby",
            len(cycle.spawned),
            len(cycle.drained),
            f", phase errors {sorted(cycle.errors)}" if cycle.errors else "",
        )

    def _run_phases(self, cycle: _Cycle) -> None:
        for phase_name, phase, leader_only in self._PHASES:
            if leader_only and self._lease is None:
                continue
            outage = self._outage
            if leader_only and outage is not None:
                # No decision from stale facts: nothing is spawned, drained or terminated until the
                # database can be read again. Lifecycles keep their pods meanwhile.
                cycle.skipped[phase_name] = f"skipped: {outage.summary()}; nothing is decided from stale facts"
                continue
            t0 = time.perf_counter()
            self._phase_now = (phase_name, time.time())
            try:
                phase(self, cycle)
            except store_base.StaleEpoch as exc:
                _telemetry.record_error("scaler", f"phase_{phase_name}_stale_epoch")
                logger.warning("phase %s: lease epoch is stale (%s); standing by", phase_name, exc)
                cycle.errors[phase_name] = f"StaleEpoch: {exc}"
                self._lease = None
            except Exception as exc:
                _telemetry.record_error("scaler", f"phase_{phase_name}")
                if isinstance(exc, store_base.DatabaseUnavailable):
                    self._database_unreachable(exc)
                in_a_row = self._phase_failures.get(phase_name, 0)
                # The traceback once, for a failure nobody expected; then, and for an expected one
                # (the provider or the database out of reach), one line per cycle naming the cause.
                if in_a_row == 0 and not isinstance(exc, _EXPECTED_FAILURES):
                    logger.exception("scaler phase %s failed (cycle %d)", phase_name, cycle.number)
                else:
                    logger.warning(
                        "scaler phase %s failed%s (cycle %d, %d in a row): %s: %s",
                        phase_name,
                        " again" if in_a_row else "",
                        cycle.number,
                        in_a_row + 1,
                        type(exc).__name__,
                        exc,
                    )
                cycle.errors[phase_name] = f"{type(exc).__name__}: {exc}"
            cycle.timings[phase_name] = time.perf_counter() - t0
            # A phase that failed for some of its items (act) counts as failed this cycle too.
            if phase_name in cycle.errors:
                self._phase_failures[phase_name] = self._phase_failures.get(phase_name, 0) + 1
                self._last_error = (f"{phase_name}: {cycle.errors[phase_name]}", time.time())
            else:
                self._phase_failures[phase_name] = 0
        self._phase_now = None

    # --- the database out of reach -----------------------------------------------------------------
    def _database_unreachable(self, exc: store_base.DatabaseUnavailable) -> None:
        """A phase could not reach the database: the outage goes on (or begins); see the docstring."""
        if self._outage is None:
            self._outage_cycles = 0
            logger.warning(
                "the database is unreachable: no spawn, drain or terminate until it is back; the "
                "lifecycles keep their pods (%s)",
                exc,
            )
        self._outage_cycles += 1
        self._outage = supervision.after_outage_failure(
            self._outage,
            time.time(),
            str(exc),
            base_s=min(1.0, self._config.cycle_interval_s),
            cap_s=self._settings.database.outage_backoff_cap_s,
            jitter=random.random(),
        )

    def _database_back(self, leads: bool) -> None:
        """The database answered again: the outage is recorded (one orchestrator event: start, end,
        what waited) before anything else is written; a record that fails is tried next cycle. Only
        by the Scaler that leads now: a standby's view of the same outage would record it twice."""
        outage = self._outage
        if outage is not None:
            self._outage = None
            worker_ids, snapshot = self._last_seen
            waited = [f"{self._outage_cycles} Scaler cycle(s) without a decision (no spawn, drain or terminate)"]
            if worker_ids:
                waited.append(f"the lifecycles of {len(worker_ids)} worker(s), pods kept: {', '.join(worker_ids)}")
            if snapshot is not None:
                waited.append(f"{snapshot.in_progress} task(s) in progress and {snapshot.queued} queued when it began")
            record = supervision.outage_record(outage, time.time(), waited)
            self._outages_to_record.append(record)
            self._back_pending = True
            logger.warning("the database answers again: %s", record.reason())
        if not leads:
            self._outages_to_record.clear()  # the leader records it; the logs keep this one's view
            return
        while self._outages_to_record:
            record = self._outages_to_record[0]
            try:
                self._store.record_orchestrator_event(
                    store_base.OrchestratorEventKind.DATABASE_OUTAGE,
                    self.holder,
                    record.reason(),
                    at=datetime.fromtimestamp(record.started_at, tz=UTC),
                    ended_at=datetime.fromtimestamp(record.ended_at, tz=UTC),
                    details=record.details(),
                )
            except Exception as exc:  # tried again next cycle; the outage stays in the logs meanwhile
                _telemetry.record_error("scaler", "record_database_outage")
                logger.warning("recording the database outage failed (%s: %s); next cycle", type(exc).__name__, exc)
                return
            self._outages_to_record.pop(0)

    # --- phases ------------------------------------------------------------------------------------
    def _phase_lease(self, cycle: _Cycle) -> None:
        lease = self._store.acquire_leader_lease(
            LEASE_NAME,
            self.holder,
            self._settings.lease_ttl_s,
            successor_of=None if self._lease_asked else self.lineage,
        )
        self._database_back(lease.acquired)
        self._lease_asked = True
        self._seen_lease = lease
        previous = self._lease
        self._lease = lease if lease.acquired else None
        if self._lease is not None and (previous is None or previous.epoch != lease.epoch):
            logger.info("%s leads with epoch %d", self.holder, lease.epoch)
            self._record_run_event(store_base.OrchestratorEventKind.STARTED, f"leads with epoch {lease.epoch}")
            try:
                self._become_leader()
            except Exception:
                # Not leading on a half-rebuilt memory (the database went away in the middle): the
                # next cycle takes the lease again and rebuilds from the start.
                self._lease = None
                raise
            _freeze_start_up_heap()

    def _become_leader(self) -> None:
        """Rebuild everything the policy remembers from the database (restart or takeover)."""
        self._store.configure_queue(self._config.per_user_concurrency_limit, self._config.max_task_attempts)
        queue = self._settings.queue
        if queue.profile is QueueProfile.REIGH:
            self._store.configure_reigh(queue.run_type, queue.app_logs)
        now = self._store.now().timestamp()
        window_start = datetime.fromtimestamp(now - self._config.failure_window_s, tz=UTC)
        decisions = self._store.list_decisions(since=window_start)
        scale_ups = [d.at.timestamp() for d in decisions if d.spawn_count > 0 and d.at is not None]
        self._cycle = max([self._cycle, *(d.cycle_number for d in decisions)])
        self._events = _EventWindow()
        events = self._events.refresh(self._store, now, self._config.failure_window_s)
        # What the policy learned of demand, from the demand each recorded decision saw.
        learned_since = datetime.fromtimestamp(now - learning.DEMAND_MEMORY_S, tz=UTC)
        recorded = self._store.list_decisions(since=learned_since, limit=learning.MAX_POINTS)
        learned = learning.memory_from_decisions(((d.at.timestamp(), d.inputs) for d in recorded if d.at), now)
        history = FleetHistory(
            last_scale_up_at=max(scale_ups, default=None),
            learned=learned,
            resume_samples=policy.resume_samples_from_events(events),
        )
        self._history = policy.record_outcomes(history, self._events.outcomes(), now, self._config)
        self._last_record_key = None
        logger.info(
            "view rebuilt: %d decisions and %d worker events in the failure window, %d demand points learned",
            len(decisions),
            len(events),
            len(learned.points),
        )

    def _phase_pods(self, cycle: _Cycle) -> None:
        """Passive: the provider's pods with our prefix, read before the rows (see reconcile).

        The provider is listed on its own cadence, not on every wake-up: a cycle woken by a task
        notification reuses the last list while it is younger than `provider_list_interval_s`
        (with the time it was read, so the reconcile still knows the pods were read before the
        rows); a timed cycle, or one whose list is older, lists again. A timed cycle's list is
        taken just before it is due, off this thread (`_PodPrefetch`, scheduled by the previous
        cycle), so the cycle does not wait for the provider: still a list made for this cycle,
        begun after the previous one ended and before these rows are read. When there is none
        (a cycle earlier than planned, a standby that just took the lease), the cycle lists now."""
        listed = self._listed
        if self._woken and listed is not None and time.monotonic() - listed[0] < self._config.provider_list_interval_s:
            cycle.pods_at, cycle.pods = listed[1], list(listed[2])
            return
        # A list that fails leaves nothing to reuse: the next cycles list (and fail, and say so)
        # again, so a provider outage is never hidden behind an older list.
        self._listed = None
        ahead = self._prefetch.take(self._prefetch_lead_s() + _PREFETCH_SLACK_S)
        if ahead is not None:
            self._list_took_s.append(ahead.took_s)
            if isinstance(ahead.error, cloud.ProviderError):
                raise ahead.error  # the provider's answer for this cycle, said once like a list made here
            if ahead.error is None and ahead.pods is not None and ahead.pods_at is not None:
                cycle.pods_at, cycle.pods = ahead.pods_at, ahead.pods
                self._listed = (ahead.started + ahead.took_s, cycle.pods_at, list(cycle.pods))
                return
            _telemetry.record_error("scaler", "pod_prefetch")
            logger.warning(
                "listing the pods ahead of cycle %d failed (%s: %s); listing them now",
                cycle.number,
                type(ahead.error).__name__,
                ahead.error,
            )
        started = time.monotonic()
        try:
            cycle.pods_at, cycle.pods = self._list_pods()
        finally:
            self._list_took_s.append(time.monotonic() - started)
        self._listed = (time.monotonic(), cycle.pods_at, list(cycle.pods))

    def _list_pods(self) -> tuple[float, list[cloud.Pod]]:
        """The database clock just before the list, and the provider's pods with our prefix."""
        pods_at = self._store.now().timestamp()
        self._provider_lists += 1
        return pods_at, self._provider.list(self._settings.provider.name_prefix)

    def _prefetch_lead_s(self) -> float:
        """How long before a timed cycle its pod list begins (see `_PodPrefetch`)."""
        return min(self._config.cycle_interval_s / 2, _PREFETCH_MARGIN_S + 2 * max(self._list_took_s, default=0.0))

    def _phase_sync(self, cycle: _Cycle) -> None:
        """Passive: rows, demand, the database clock, and the reconcile plan when the pods are known.
        Changes nothing: every act is in the act phase."""
        rows = self._store.list_workers(on_malformed=functools.partial(self._malformed_row, cycle))
        # Demand for the task types this fleet's workers claim (worker.task_types; empty: all). The
        # reigh worker claims by the app's run type (queue.run_type), which its demand already uses.
        served = self._settings.worker.task_types if self._settings.queue.profile is QueueProfile.NATIVE else None
        cycle.snapshot = self._store.demand_snapshot(self._config.per_user_concurrency_limit, served or None)
        cycle.now = self._store.now().timestamp()
        cycle.rows = rows
        self._last_seen = (sorted(r.id for r in rows), cycle.snapshot)
        if self._back_pending:
            self._silence_from, self._back_pending = cycle.now, False
        if cycle.pods is None:
            cycle.skipped["reconcile"] = "skipped: the provider's pods are unknown this cycle (the pods phase failed)"
            return
        # A malformed row is still a live worker to the reconcile (its pod is no orphan), pod unknown.
        live: dict[str, str | None] = {**dict.fromkeys(cycle.malformed), **{r.id: r.pod_id for r in rows}}
        known: dict[str, float | None] = {}
        unreadable: set[str] = set()
        for pod in cycle.pods:
            if pod.name in live:
                continue
            try:
                row = self._store.get_worker(pod.name)
            except Exception as exc:  # a row that cannot be read: its pod is left alone this cycle
                _telemetry.record_error("scaler", "orphan_row_read")
                logger.warning("could not read the row named like pod %s: %s: %s", pod.id, type(exc).__name__, exc)
                unreadable.add(pod.name)
                continue
            if row is not None:
                known[pod.name] = row.terminated_at.timestamp() if row.terminated_at is not None else None
        cycle.plan = supervision.reconcile(
            [(p.id, p.name) for p in cycle.pods if p.name not in unreadable],
            live.items(),
            known,
            self._settings.provider.orphan_pod_policy,
            ended_at={name: at for name, at in known.items() if at is not None},
            listed_at=cycle.pods_at,
        )
        if cycle.plan.pods_missing:
            logger.info("pods not listed by the provider for %s; their lifecycles confirm", cycle.plan.pods_missing)

    def _malformed_row(self, cycle: _Cycle, worker_id: str, error: str) -> None:
        """One row that does not parse is left out of this cycle (and said so), never the whole list."""
        _telemetry.record_error("scaler", "malformed_worker_row")
        logger.warning("worker row %s is malformed (%s); left out of cycle %d", worker_id, error, cycle.number)
        cycle.malformed[worker_id] = error

    def _phase_decide(self, cycle: _Cycle) -> None:
        if cycle.rows is None or cycle.snapshot is None or cycle.now is None or self._lease is None:
            cycle.skipped["decide"] = _NO_INPUT
            return
        now = cycle.now
        self._events.refresh(self._store, now, self._config.failure_window_s)
        history = policy.record_outcomes(self._history, self._events.outcomes(), now, self._config)
        views = [worker_view(r) for r in cycle.rows]
        self._record_fleet_silence(views, now)
        decision = policy.decide(policy.PolicyContext(cycle.snapshot, views, history, self._config, now))
        by_state = collections.Counter(r.status.value for r in cycle.rows)
        inputs = {**decision.inputs, **{f"workers_{s.value}": by_state.get(s.value, 0) for s in WorkerState}}
        # The warm pool's part of the decision (the record's own columns say spawn and drain).
        warm_pool = {"resume": decision.resume, "park": decision.park, "retire": decision.retire}
        inputs.update({f"warm_pool_{what}": ",".join(ids) for what, ids in warm_pool.items() if ids})
        cycle.span = cycle.scope.enter_context(
            _telemetry.decision_span(cycle.number, {"scaler.holder": self.holder, "scaler.epoch": self._lease.epoch})
        )
        _telemetry.set_span_attributes(
            cycle.span,
            {**inputs, "spawn": decision.spawn, "drain": len(decision.drain), "resume": len(decision.resume)},
        )
        record = supervision.should_record(decision, self._last_record_key)
        if record:
            cycle.decision_id = self._store.record_decision(
                store_base.DecisionRecord(
                    cycle_number=cycle.number,
                    leader_epoch=self._lease.epoch,
                    holder=self.holder,
                    inputs=inputs,
                    spawn_count=decision.spawn,
                    drain_worker_ids=list(decision.drain),
                    reasons=list(decision.reasons),
                    breaker=_breaker_dict(decision.history),
                    trace_id=_telemetry.current_trace_id(),
                    kind=decision.kind,
                )
            )
            self._last_record_key = supervision.decision_record_key(decision)
            logger.info(
                "cycle %d decision %s: spawn %d, drain %s%s: %s",
                cycle.number,
                cycle.decision_id,
                decision.spawn,
                list(decision.drain),
                "".join(f", {what} {list(ids)}" for what, ids in warm_pool.items() if ids),
                " | ".join(decision.reasons),
            )
        # Only now, with the decision on record (or nothing to record), does the policy's memory move.
        self._history = decision.history
        cycle.decision = decision
        self._last_decision = {
            "cycle": cycle.number,
            "at": now,
            "id": cycle.decision_id,
            "spawn": decision.spawn,
            "drain": list(decision.drain),
            "resume": list(decision.resume),
            "park": list(decision.park),
            "retire": list(decision.retire),
            "desired": decision.desired,
            "capacity": decision.capacity,
            "reasons": list(decision.reasons),
            "recorded": record,
        }
        if decision.changes_something:
            self._stop.wait(self._pause_after_decide_s)

    def _record_fleet_silence(self, views: list[WorkerView], now: float) -> None:
        """Many workers silent at once (see fleet.supervision.fleet_silence) goes on record once per
        episode, as an orchestrator event for `explain`; the lifecycles hold their verdicts themselves."""
        fleet = supervision.fleet_silence(
            views,
            now,
            timeout_s=self._config.heartbeat_timeout_s,
            counts_from=self._silence_from,
            share=self._config.mass_silence_share,
            min_workers=self._config.mass_silence_min_workers,
        )
        record, self._fault_recorded = supervision.fault_episode(fleet, self._fault_recorded)
        if not record:
            return
        reason = f"{fleet.reason}: {', '.join(fleet.silent)}"
        logger.warning("%s", reason)
        try:
            self._store.record_orchestrator_event(
                store_base.OrchestratorEventKind.INFRASTRUCTURE_FAULT,
                self.holder,
                reason,
                details={"silent": list(fleet.silent), "expected": fleet.expected},
            )
        except Exception as exc:  # tried again next cycle
            _telemetry.record_error("scaler", "record_infrastructure_fault")
            logger.warning("recording the infrastructure fault failed (%s: %s)", type(exc).__name__, exc)
            self._fault_recorded = False

    def _phase_act(self, cycle: _Cycle) -> None:
        lease = self._lease
        if lease is None:  # deposed earlier in this cycle
            return
        epoch = lease.epoch
        failures: list[str] = []
        recorded: set[str] = set()
        if cycle.plan is not None and cycle.pods is not None and cycle.now is not None:
            recorded = self._act_on_pods(cycle.plan, cycle.pods, epoch, cycle.now, failures)
        self._item(failures, "worker credentials", "credential_reap", self._reap_credentials)
        if cycle.rows is not None:
            live_ids = {r.id for r in cycle.rows} | recorded
            for worker_id in supervision.lifecycles_to_ensure(live_ids, self._provisioner.in_flight()):
                what = f"lifecycle of {worker_id}"
                self._item(failures, what, "lifecycle_ensure", self._lifecycles.ensure, worker_id)
            self._lifecycles.keep_only(live_ids)
        decision = cycle.decision
        if decision is not None:
            # The warm pool first: a resumed pod is capacity sooner than a new one.
            for worker_id in decision.resume:
                reason = f"scale_up: decision {cycle.decision_id} (cycle {cycle.number}) resumes it from the warm pool"
                what = f"resume of {worker_id}"
                if self._item(failures, what, "resume_request", self._resume, worker_id, reason, epoch):
                    cycle.resumed.append(worker_id)
            for _ in range(decision.spawn):
                spawned = self._item(failures, "spawn", "spawn", self._spawn, cycle, epoch)
                if spawned is not None:
                    cycle.spawned.append(spawned)
            if cycle.spawned and cycle.decision_id is not None:
                self._item(
                    failures,
                    f"decision {cycle.decision_id} spawned",
                    "decision_spawned",
                    self._store.set_decision_spawned,
                    cycle.decision_id,
                    cycle.spawned,
                )
            parked = set(decision.park)
            for worker_id in decision.drain:
                reason = f"scale_down: decision {cycle.decision_id} (cycle {cycle.number})"
                what = f"drain of {worker_id}"
                if self._item(failures, what, "drain_request", self._drain, worker_id, reason, epoch, parked):
                    cycle.drained.append(worker_id)
            for worker_id in decision.retire:
                reason = f"retired: decision {cycle.decision_id} (cycle {cycle.number}) takes it out of the warm pool"
                what = f"retire of {worker_id}"
                if self._item(failures, what, "retire_request", self._retire, worker_id, reason, epoch):
                    cycle.retired.append(worker_id)
        if failures:
            cycle.errors["act"] = "; ".join(failures)

    def _item(self, failures: list[str], what: str, code: str, fn: Callable[..., _T], *args: Any) -> _T | None:
        """One item of the act phase: its failure is counted, logged and reported; the rest go on.
        A stale epoch ends the phase (this Scaler no longer leads)."""
        try:
            return fn(*args)
        except store_base.StaleEpoch:
            raise
        except Exception as exc:
            _telemetry.record_error("scaler", code)
            logger.warning("%s failed: %s: %s", what, type(exc).__name__, exc, exc_info=True)
            failures.append(f"{what}: {type(exc).__name__}: {exc}")
            return None

    def _reap_credentials(self) -> None:
        """Pods' own credentials a crash left behind (terminated or gone workers, stray roles) go."""
        reaped = self._store.reap_worker_credentials()
        if reaped.revoked or reaped.dropped_roles:
            logger.warning("revoked the credentials of %s; dropped the roles %s", reaped.revoked, reaped.dropped_roles)

    def _drain(self, worker_id: str, reason: str, epoch: int, parked: set[str]) -> bool:
        """A drain; one the decision parks stops the pod for the warm pool after it (not terminated)."""
        request = self._lifecycles.park if worker_id in parked else self._lifecycles.drain
        request(worker_id, reason, epoch)
        return True

    def _resume(self, worker_id: str, reason: str, epoch: int) -> bool:
        self._lifecycles.resume(worker_id, reason, epoch)
        return True

    def _retire(self, worker_id: str, reason: str, epoch: int) -> bool:
        self._lifecycles.retire(worker_id, reason, epoch)
        return True

    def _act_on_pods(
        self, plan: supervision.ReconcilePlan, pods: list[cloud.Pod], epoch: int, now: float, failures: list[str]
    ) -> set[str]:
        """The reconcile plan, pod by pod; returns the names of the worker rows it wrote."""
        by_id = {p.id: p for p in pods}
        recorded: set[str] = set()
        for orphan in plan.orphans:
            if orphan.ended:
                self._terminate_extra(
                    orphan.pod_id, orphan.pod_name, orphan.reason, epoch, now, failures, note_success=False
                )
            elif self._item(
                failures,
                f"orphan pod {orphan.pod_id}",
                "orphan_pod",
                self._record_orphan,
                orphan,
                by_id[orphan.pod_id],
                epoch,
            ):
                recorded.add(orphan.pod_name)
        for duplicate in plan.duplicates:
            self._terminate_extra(duplicate.pod_id, duplicate.worker_id, duplicate.reason, epoch, now, failures)
        self._pod_retries = {pod: r for pod, r in self._pod_retries.items() if pod in by_id}
        return recorded

    def _record_orphan(self, orphan: supervision.OrphanAction, pod: cloud.Pod, epoch: int) -> bool:
        """A worker row for an orphan pod: adopted (supervised like any other), or `terminating` so its
        lifecycle stops the pod, retried and recorded, visible to `explain --worker`. False when a row
        of that name appeared meanwhile (it is not ours to touch)."""
        logger.warning("%s", orphan.reason)
        row = self._store.create_worker(
            orphan.pod_name,
            reason=orphan.reason,
            epoch=epoch,
            metadata={"orphan_pod": orphan.pod_id, "adopted": orphan.adopt},
        )
        if row.metadata.get("orphan_pod") != orphan.pod_id:
            return False
        if not orphan.adopt and row.status is WorkerState.SPAWNING:
            # The row says "terminating" before it names the pod: a crash in between leaves a lifecycle
            # that finds the pod by its name and stops it, never one that boots it.
            self._store.transition_worker(
                orphan.pod_name, WorkerState.SPAWNING, WorkerState.TERMINATING, orphan.reason, epoch=epoch
            )
        self._store.set_worker_pod(orphan.pod_name, orphan.pod_id, pod.gpu_type)
        return True

    def _terminate_extra(
        self,
        pod_id: str,
        worker_id: str,
        reason: str,
        epoch: int,
        now: float,
        failures: list[str],
        *,
        note_success: bool = True,
    ) -> None:
        """Terminate a pod no lifecycle owns (a duplicate, an ended worker's): retried with backoff,
        each failure noted on the worker's record, and the success too for a duplicate. (An ended
        worker's pod may just be a listing that lags its confirmed end: terminating a pod already
        gone succeeds, and a note for it on every lagging cycle would only add noise.)"""
        retry = self._pod_retries.get(pod_id)
        if not supervision.retry_due(retry, now):
            return
        logger.warning("%s", reason)
        try:
            self._provider.terminate(pod_id)
        except cloud.ProviderError as exc:
            failed = supervision.after_failure(
                retry,
                now,
                f"{type(exc).__name__}: {exc}",
                base_s=self._config.cycle_interval_s,
                cap_s=_POD_RETRY_CAP_S,
            )
            self._pod_retries[pod_id] = failed
            _telemetry.record_error("scaler", "pod_terminate")
            note = supervision.terminate_failed_reason(pod_id, failed, now)
            logger.warning("%s: %s", worker_id, note)
            self._item(failures, f"note on {worker_id}", "worker_note", self._note, worker_id, note, epoch)
            return
        self._pod_retries.pop(pod_id, None)
        _telemetry.record_termination(reason)
        if note_success:
            self._item(failures, f"note on {worker_id}", "worker_note", self._note, worker_id, reason, epoch)

    def _note(self, worker_id: str, reason: str, epoch: int) -> None:
        self._store.note_worker(worker_id, reason, epoch=epoch)

    def _spawn(self, cycle: _Cycle, epoch: int) -> str:
        """Intent first: the row (with the trace anchor and the epoch), then the pod's create call
        (off this thread), then the lifecycle that owns the pod (see `provisioning.Provisioner`)."""
        worker_id = supervision.new_worker_id(self._settings.provider.name_prefix, time.time(), secrets.token_hex(4))
        traceparent = _telemetry.start_lifecycle_trace(
            worker_id,
            decision_span=cycle.span,
            attributes={"decision.id": cycle.decision_id or 0, "cycle": cycle.number},
        )
        self._store.create_worker(
            worker_id,
            reason=f"scale_up: decision {cycle.decision_id} (cycle {cycle.number}, epoch {epoch})",
            epoch=epoch,
            trace_context=traceparent,
            metadata={"decision_id": cycle.decision_id, "cycle": cycle.number, "spawned_by": self.holder},
        )
        logger.info("spawning %s (decision %s)", worker_id, cycle.decision_id)
        self._provisioner.submit(worker_id, traceparent)
        return worker_id

    def _phase_retention(self, cycle: _Cycle) -> None:
        """The orchestrator's own rows older than their retention (settings.retention) go, at most
        every `retention.interval_s`, in batches of `batch_size` (each its own short transaction
        that locks only the rows it deletes, so claims never wait for it), at most `max_batches`
        per target per run. Finished tasks only in the native profile: reigh's are the app's."""
        config = self._settings.retention
        now = time.monotonic()
        if not config.enabled or (self._retention_at is not None and now - self._retention_at < config.interval_s):
            return
        self._retention_at = now
        keep = {
            store_base.RetentionTarget.SYSTEM_LOGS: config.system_logs_s,
            store_base.RetentionTarget.WORKER_EVENTS: config.worker_events_s,
            store_base.RetentionTarget.WORKERS: config.terminated_workers_s,
        }
        if self._settings.queue.profile is QueueProfile.NATIVE:
            keep[store_base.RetentionTarget.TASKS] = config.finished_tasks_s
        deleted: dict[str, int] = {}
        for target, keep_s in keep.items():
            total = 0
            for _ in range(config.max_batches):
                batch = self._store.apply_retention(target, keep_s, config.batch_size)
                total += batch
                if batch < config.batch_size or self._stop.is_set():
                    break
            deleted[target.value] = total
        if any(deleted.values()):
            logger.info("retention deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items() if n))

    def _phase_probe(self, cycle: _Cycle) -> None:
        if self._shipper_probe is not None:
            self._shipper_probe()

    def _phase_metrics(self, cycle: _Cycle) -> None:
        counted = collections.Counter(r.status.value for r in cycle.rows or ())
        # Every state, 0 included: a gauge of a state nobody is in any more must say 0, not its last count.
        by_state = {state.value: counted.get(state.value, 0) for state in WorkerState}
        _telemetry.record_cycle(sum(cycle.timings.values()), cycle.snapshot, by_state, self._history.breaker.status)
        _telemetry.record_spawns(len(cycle.spawned))
        _telemetry.record_fleet(cycle.rows)  # boot times: the Scaler outlives the lifecycles

    # (name, phase, leader only)
    _PHASES: tuple[tuple[str, Callable[[Scaler, _Cycle], None], bool], ...] = (
        ("lease", _phase_lease, False),
        ("pods", _phase_pods, True),
        ("sync", _phase_sync, True),
        ("decide", _phase_decide, True),
        ("act", _phase_act, True),
        ("retention", _phase_retention, True),
        ("probe", _phase_probe, False),
        ("metrics", _phase_metrics, False),
    )


def _freeze_start_up_heap() -> None:
    """What the process holds when a Scaler first leads (imports, settings, pools, the rebuilt
    memory) lives as long as the process: out of the collector's sight, so its full collections
    scan only what came after (a pause of up to ~200 ms in a cycle at 1,000 rows before). And the
    youngest generation is collected after `_GC_YOUNG_THRESHOLD` new objects instead of 700: a
    cycle at 1,000 rows makes ~100,000 short-lived objects that die by reference count, and at 700
    the collector ran ~30 times a cycle, moving the cycle's live ones into the older generations,
    whose collections then paused cycles by tens of ms (bench/fleet_scale.py --rows-only prints the
    pauses). Once per process: an object frozen that later becomes cyclic garbage is never freed."""
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.freeze()
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


_heap_frozen = False
_GC_YOUNG_THRESHOLD = 20_000


def _breaker_dict(history: FleetHistory) -> dict[str, Any]:
    b = history.breaker
    return {
        "status": b.status.value,
        "opened_at": b.opened_at,
        "failure_rate": b.failure_rate,
        "attempts_in_window": b.attempts_in_window,
        "failures_in_window": b.failures_in_window,
        "probe_worker_id": b.probe_worker_id,
    }


def _default_store(settings: OrchestratorSettings) -> store_base.Store:
    # Opens during an outage too: a constructor that raised would end the actor for good.
    return stores.open_store(settings, require_reachable=False)


def _default_provider(settings: OrchestratorSettings) -> cloud.Provider:
    return providers.make_provider(settings)
