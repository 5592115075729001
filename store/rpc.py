"""The one implementation of the Store protocol, on top of "call this SQL function with these args".

Every operation is a SQL function (store/migrations/, one file per domain). `RpcStore` builds the
named arguments, says whether the call is safe to repeat, and parses the jsonb or scalar answer;
a subclass supplies only the transport (`_call`): PostgresStore runs `SELECT fn(...)` over
psycopg, SupabaseStore posts to PostgREST `rpc/fn`. So both stores behave the same by
construction, and the contract suite checks it.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from fleet.models import DemandSnapshot, WorkerState
from store.base import (
    DecisionRecord,
    Lease,
    LogInsertResult,
    LogRecord,
    NewTask,
    OrchestratorEvent,
    OrchestratorEventKind,
    OrchestratorSignals,
    RetentionTarget,
    RetentionWindow,
    TaskRow,
    WorkerCredential,
    WorkerCredentialKind,
    WorkerCredentialReap,
    WorkerEvent,
    WorkerRow,
)

__all__ = ["JsonArg", "RpcStore"]

_DATETIME = TypeAdapter(datetime)
_TASKS = TypeAdapter(list[TaskRow])
_WORKERS = TypeAdapter(list[WorkerRow])
_EVENTS = TypeAdapter(list[WorkerEvent])
_DECISIONS = TypeAdapter(list[DecisionRecord])
_RUN_EVENTS = TypeAdapter(list[OrchestratorEvent])
_LOGS = TypeAdapter(list[LogRecord])
_RETENTION = TypeAdapter(list[RetentionWindow])


@dataclass(frozen=True, slots=True)
class JsonArg:
    """An argument whose SQL type is jsonb (a dict or a list of dicts), not an array or a scalar."""

    value: Any


class RpcStore(ABC):
    """Store operations over SQL functions; subclasses implement `_call` and the lifecycle."""

    @abstractmethod
    def _call(self, fn: str, args: dict[str, Any], *, safe: bool) -> Any:
        """Call SQL function `fn` with named arguments; return its decoded result (None for NULL).

        `safe` says the call may be repeated after a transient failure with no harm (reads,
        idempotent or compare-and-set writes). Raises StoreError, StaleEpoch or DatabaseUnavailable.
        """

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def wait_for_task_change(self, timeout_s: float) -> bool: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    # --- queue settings ------------------------------------------------------------------------
    def configure_queue(self, per_user_limit: int, max_task_attempts: int) -> None:
        self._call(
            "configure_queue",
            {"p_per_user_limit": per_user_limit, "p_max_task_attempts": max_task_attempts},
            safe=True,
        )

    def configure_reigh(self, run_type: str, app_logs: bool) -> None:
        self._call("configure_reigh", {"p_run_type": run_type, "p_app_logs": app_logs}, safe=True)

    # --- tasks -----------------------------------------------------------------------------------
    def insert_tasks(self, tasks: list[NewTask]) -> list[str]:
        if not tasks:
            return []
        rows = [task.model_dump(mode="json", exclude_none=True) for task in tasks]
        # Safe to repeat only when every id is given (ON CONFLICT (id) DO NOTHING).
        safe = all(task.id is not None for task in tasks)
        ids = self._call("insert_tasks", {"p_tasks": JsonArg(rows)}, safe=safe)
        return [str(i) for i in ids]

    def claim_next_task(self, worker_id: str, task_types: list[str] | None = None) -> TaskRow | None:
        # Never repeated: a claim whose answer was lost may have taken a task.
        data = self._call(
            "claim_next_task", {"p_worker_id": worker_id, "p_task_types": list(task_types or [])}, safe=False
        )
        return None if data is None else TaskRow.model_validate(data)

    def complete_task(self, task_id: str, worker_id: str, result: dict[str, Any] | None = None) -> bool:
        args = {"p_task_id": task_id, "p_worker_id": worker_id, "p_result": JsonArg(result)}
        return bool(self._call("complete_task", args, safe=True))

    def worker_held_tasks(self, worker_id: str) -> list[TaskRow]:
        return _TASKS.validate_python(self._call("worker_held_tasks", {"p_worker_id": worker_id}, safe=True))

    def worker_task_status(self, task_id: str, worker_id: str) -> str | None:
        data = self._call("worker_task_status", {"p_task_id": task_id, "p_worker_id": worker_id}, safe=True)
        return None if data is None else str(data)

    def fail_task(self, task_id: str, worker_id: str, error: str) -> str | None:
        # Safe: once the first call took the task out of In Progress for this worker, a repeat
        # matches nothing and changes nothing (it answers None).
        data = self._call("fail_task", {"p_task_id": task_id, "p_worker_id": worker_id, "p_error": error}, safe=True)
        return None if data is None else str(data)

    def requeue_worker_tasks(self, worker_id: str) -> int:
        return int(self._call("requeue_worker_tasks", {"p_worker_id": worker_id}, safe=True))

    def demand_snapshot(self, per_user_limit: int | None = None, task_types: list[str] | None = None) -> DemandSnapshot:
        args: dict[str, Any] = {} if per_user_limit is None else {"p_per_user_limit": per_user_limit}
        if task_types:  # only when given: the reigh profile's demand_snapshot has no such argument
            args["p_task_types"] = list(task_types)
        data = self._call("demand_snapshot", args, safe=True)
        core = ("queued", "claimable", "in_progress", "taken_at")
        return DemandSnapshot(
            queued=int(data["queued"]),
            claimable=int(data["claimable"]),
            in_progress=int(data["in_progress"]),
            taken_at=float(data["taken_at"]),
            breakdown=tuple(
                sorted((key, int(value)) for key, value in data.items() if key not in core and isinstance(value, int))
            ),
        )

    def get_task(self, task_id: str) -> TaskRow | None:
        data = self._call("get_task", {"p_task_id": task_id}, safe=True)
        return None if data is None else TaskRow.model_validate(data)

    def list_tasks(self, status: str | None = None, limit: int = 10_000) -> list[TaskRow]:
        return _TASKS.validate_python(self._call("list_tasks", {"p_status": status, "p_limit": limit}, safe=True))

    def task_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in dict(self._call("task_counts", {}, safe=True)).items()}

    # --- workers ---------------------------------------------------------------------------------
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
        args = {
            "p_worker_id": worker_id,
            "p_reason": reason,
            "p_epoch": epoch,
            "p_gpu_type": gpu_type,
            "p_trace_context": trace_context,
            "p_metadata": JsonArg(metadata),
            "p_created_at": created_at,
        }
        return WorkerRow.model_validate(self._call("create_worker", args, safe=True))

    def get_worker(self, worker_id: str) -> WorkerRow | None:
        data = self._call("get_worker", {"p_worker_id": worker_id}, safe=True)
        return None if data is None else WorkerRow.model_validate(data)

    def list_workers(
        self, include_terminated: bool = False, *, on_malformed: Callable[[str, str], None] | None = None
    ) -> list[WorkerRow]:
        # list_worker_rows: the rows built as json, cheaper for the database than list_workers' jsonb
        data = self._call("list_worker_rows", {"p_include_terminated": include_terminated}, safe=True)
        if on_malformed is None:
            return _WORKERS.validate_python(data)
        try:  # the whole list at once (the Scaler's every cycle, 1,000 rows); row by row only to say which
            return _WORKERS.validate_python(data or [])
        except ValidationError:
            pass
        rows: list[WorkerRow] = []
        for item in data or []:
            try:
                rows.append(WorkerRow.model_validate(item))
            except ValidationError as exc:
                worker_id = str(item.get("id")) if isinstance(item, dict) else repr(item)[:80]
                problems = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
                on_malformed(worker_id, "; ".join(problems) or str(exc))
        return rows

    def set_worker_pod(
        self, worker_id: str, pod_id: str, gpu_type: str | None, metadata: dict[str, Any] | None = None
    ) -> None:
        args = {"p_worker_id": worker_id, "p_pod_id": pod_id, "p_gpu_type": gpu_type, "p_metadata": JsonArg(metadata)}
        self._call("set_worker_pod", args, safe=True)

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
        args = {
            "p_worker_id": worker_id,
            "p_expected": None if expected is None else str(expected),
            "p_new": str(new),
            "p_reason": reason,
            "p_epoch": epoch,
            "p_at": at,
        }
        # Compare-and-set: a repeat after a lost answer returns False and changes nothing.
        return bool(self._call("transition_worker", args, safe=True))

    def note_worker(
        self, worker_id: str, reason: str, *, epoch: int | None = None, metadata: dict[str, Any] | None = None
    ) -> bool:
        args = {"p_worker_id": worker_id, "p_reason": reason, "p_epoch": epoch, "p_metadata": JsonArg(metadata)}
        # Not repeated: a lost answer would write the note twice (a note is not compare-and-set).
        return bool(self._call("note_worker", args, safe=False))

    def worker_heartbeat(self, worker_id: str, metadata: dict[str, Any] | None = None) -> WorkerState | None:
        data = self._call("worker_heartbeat", {"p_worker_id": worker_id, "p_metadata": JsonArg(metadata)}, safe=True)
        return None if data is None else WorkerState(data)

    def list_worker_events(
        self,
        worker_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[WorkerEvent]:
        args = {"p_worker_id": worker_id, "p_since": since, "p_until": until, "p_limit": limit}
        return _EVENTS.validate_python(self._call("list_worker_events", args, safe=True))

    # --- decisions -------------------------------------------------------------------------------
    def record_decision(self, decision: DecisionRecord) -> int:
        # Not repeated: a lost answer would write the decision twice.
        payload = decision.model_dump(mode="json", exclude={"id"}, exclude_none=True)
        return int(self._call("record_decision", {"p_decision": JsonArg(payload)}, safe=False))

    def set_decision_spawned(self, decision_id: int, worker_ids: list[str]) -> None:
        self._call("set_decision_spawned", {"p_decision_id": decision_id, "p_worker_ids": list(worker_ids)}, safe=True)

    def list_decisions(
        self, since: datetime | None = None, until: datetime | None = None, limit: int = 1000
    ) -> list[DecisionRecord]:
        args = {"p_since": since, "p_until": until, "p_limit": limit}
        return _DECISIONS.validate_python(self._call("list_decisions", args, safe=True))

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
        # Not repeated: a lost answer would record the stop twice.
        args: dict[str, Any] = {"p_kind": str(kind), "p_holder": holder, "p_reason": reason, "p_at": at}
        if ended_at is not None or details is not None:  # only then: older databases lack the two
            args |= {"p_ended_at": ended_at, "p_details": JsonArg(details or {})}
        return int(self._call("record_orchestrator_event", args, safe=False))

    def list_orchestrator_events(
        self, since: datetime | None = None, until: datetime | None = None, limit: int = 1000
    ) -> list[OrchestratorEvent]:
        args = {"p_since": since, "p_until": until, "p_limit": limit}
        return _RUN_EVENTS.validate_python(self._call("list_orchestrator_events", args, safe=True))

    # --- logs ------------------------------------------------------------------------------------
    def insert_system_logs(self, records: list[LogRecord]) -> LogInsertResult:
        rows = [record.model_dump(mode="json") for record in records]
        return self.insert_system_log_dicts(rows)

    def insert_system_log_dicts(self, rows: list[dict[str, Any]]) -> LogInsertResult:
        """Insert already-serialized records (JSON-ready dicts, e.g. replayed from a spool).

        Each dict has LogRecord's fields; the database validates every row and reports the ones it
        rejects. Safe to repeat: ids already present count as duplicates.
        """
        if not rows:
            return LogInsertResult(inserted=0)
        data = self._call("insert_system_logs", {"p_records": JsonArg(rows)}, safe=True)
        return LogInsertResult.model_validate(data)

    def list_system_logs(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        source_id: str | None = None,
        limit: int = 10_000,
    ) -> list[LogRecord]:
        args = {"p_since": since, "p_until": until, "p_source_id": source_id, "p_limit": limit}
        return _LOGS.validate_python(self._call("list_system_logs", args, safe=True))

    # --- worker credentials ----------------------------------------------------------------------
    def issue_worker_credential(
        self, worker_id: str, kind: WorkerCredentialKind, valid_for_s: float
    ) -> WorkerCredential:
        # Safe: a repeat returns the credential the first call made.
        args = {"p_worker_id": worker_id, "p_kind": str(kind), "p_valid_for_s": float(valid_for_s)}
        return WorkerCredential.model_validate(self._call("issue_worker_credential", args, safe=True))

    def revoke_worker_credential(self, worker_id: str, reason: str) -> bool:
        args = {"p_worker_id": worker_id, "p_reason": reason}
        return bool(self._call("revoke_worker_credential", args, safe=True))

    def reap_worker_credentials(self) -> WorkerCredentialReap:
        return WorkerCredentialReap.model_validate(self._call("reap_worker_credentials", {}, safe=True))

    # --- leader lease ----------------------------------------------------------------------------
    def acquire_leader_lease(self, name: str, holder: str, ttl_s: float, *, successor_of: str | None = None) -> Lease:
        args: dict[str, Any] = {"p_name": name, "p_holder": holder, "p_ttl_s": float(ttl_s)}
        if successor_of is not None:
            args["p_successor_of"] = successor_of
        # Safe: a repeat by the same holder renews with the same epoch.
        return Lease.model_validate(self._call("acquire_leader_lease", args, safe=True))

    def release_leader_lease(self, name: str, holder: str, epoch: int) -> None:
        self._call("release_leader_lease", {"p_name": name, "p_holder": holder, "p_epoch": epoch}, safe=True)

    def get_leader_lease(self, name: str) -> Lease | None:
        data = self._call("get_leader_lease", {"p_name": name}, safe=True)
        return None if data is None else Lease.model_validate(data)

    # --- explain ---------------------------------------------------------------------------------
    def explain_silences(self, since: datetime, until: datetime, threshold_s: float) -> OrchestratorSignals:
        args = {"p_since": since, "p_until": until, "p_threshold_s": float(threshold_s)}
        return OrchestratorSignals.model_validate(self._call("explain_silences", args, safe=True))

    def worker_tasks(self, worker_id: str, limit: int = 1000) -> list[TaskRow]:
        args = {"p_worker_id": worker_id, "p_limit": limit}
        return _TASKS.validate_python(self._call("explain_worker_tasks", args, safe=True))

    # --- retention -------------------------------------------------------------------------------
    def apply_retention(self, target: RetentionTarget, keep_s: float, batch: int = 1000) -> int:
        # Safe: deleting what is older than the window again deletes nothing more than it should.
        args = {"p_target": str(target), "p_keep_s": float(keep_s), "p_batch": int(batch)}
        return int(self._call("apply_retention", args, safe=True) or 0)

    def retention_windows(self) -> list[RetentionWindow]:
        return _RETENTION.validate_python(self._call("retention_windows", {}, safe=True) or [])

    # --- clock -----------------------------------------------------------------------------------
    def now(self) -> datetime:
        return _DATETIME.validate_python(self._call("db_now", {}, safe=True))


def backoff_delays(retries: int, base_s: float = 0.2, cap_s: float = 5.0) -> list[float]:
    """Exponential backoff with full jitter: `retries` waits, each uniform in [0, min(cap, base*2^i)]."""
    return [random.uniform(0, min(cap_s, base_s * (2**i))) for i in range(retries)]
