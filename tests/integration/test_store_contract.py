"""The Store contract, run over every implementation (PostgresStore, SupabaseStore via PostgREST stand-in)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from fleet.models import DecisionKind, WorkerState
from store.base import (
    DecisionRecord,
    LogRecord,
    NewTask,
    OrchestratorEventKind,
    SignalGap,
    StaleEpoch,
    Store,
    StoreError,
    TaskStatus,
)
from store.rpc import RpcStore


def _active_worker(store: Store, worker_id: str = "gpu-20240101_000000-aaaaaaaa") -> str:
    store.create_worker(worker_id, reason="test")
    assert store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "heartbeat seen")
    return worker_id


def _log(i: int, **overrides: object) -> LogRecord:
    values: dict[str, object] = {
        "id": f"log-{i}",
        "at": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
        "level": "INFO",
        "source_type": "orchestrator",
        "source_id": "scaler",
        "message": f"message {i}",
    }
    values.update(overrides)
    return LogRecord.model_validate(values)


def _queue_settings(database_url: str) -> dict[str, int]:
    """What the SQL functions read as the queue settings, straight from the table."""
    with psycopg.connect(database_url) as conn:
        return dict(conn.execute("SELECT key, value FROM queue_settings").fetchall())


def test_is_a_store(store: RpcStore) -> None:
    assert isinstance(store, Store)
    assert "secret" not in repr(store)


def test_insert_and_read_tasks(store: RpcStore) -> None:
    ids = store.insert_tasks(
        [
            NewTask(task_type="travel_segment", user_id="u1", params={"n": 1}),
            NewTask(task_type="travel_orchestrator", user_id="u2", id="given-id"),
        ]
    )
    assert len(ids) == 2 and ids[1] == "given-id"
    task = store.get_task(ids[0])
    assert task is not None
    assert task.status == TaskStatus.QUEUED and task.params == {"n": 1} and task.attempts == 0
    assert task.created_at.tzinfo is not None and task.created_at.utcoffset() == timedelta(0)
    assert store.get_task("missing") is None
    assert [t.id for t in store.list_tasks()] == ids
    assert store.list_tasks(status=TaskStatus.COMPLETE) == []
    assert store.task_counts() == {TaskStatus.QUEUED: 2}
    # Given ids make a retried insert a no-op.
    assert store.insert_tasks([NewTask(task_type="x", user_id="u2", id="given-id")]) == ["given-id"]
    assert len(store.list_tasks()) == 2


def test_claim_needs_an_active_worker(store: RpcStore) -> None:
    store.insert_tasks([NewTask(task_type="t", user_id="u")])
    assert store.claim_next_task("unknown-worker") is None
    store.create_worker("w-spawning", reason="test")
    assert store.claim_next_task("w-spawning") is None
    worker = _active_worker(store, "w-active")
    assert store.transition_worker(worker, WorkerState.ACTIVE, WorkerState.DRAINING, "scale down")
    assert store.claim_next_task(worker) is None
    other = _active_worker(store, "w-other")
    claimed = store.claim_next_task(other)
    assert claimed is not None and claimed.worker_id == other


def test_claim_order_types_dependencies_and_limit(store: RpcStore) -> None:
    store.configure_queue(per_user_limit=2, max_task_attempts=3)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    ids = store.insert_tasks(
        [
            NewTask(task_type="a", user_id="u1", id="t1", created_at=base),
            NewTask(task_type="a", user_id="u1", id="t2", created_at=base + timedelta(seconds=1), depends_on="t1"),
            NewTask(task_type="a", user_id="u1", id="t3", created_at=base + timedelta(seconds=2)),
            NewTask(task_type="a", user_id="u1", id="t4", created_at=base + timedelta(seconds=3)),
            NewTask(task_type="b", user_id="u2", id="t5", created_at=base + timedelta(seconds=4)),
        ]
    )
    assert ids == ["t1", "t2", "t3", "t4", "t5"]
    worker = _active_worker(store)
    assert store.claim_next_task(worker, ["b"]).id == "t5"  # type: ignore[union-attr]
    first = store.claim_next_task(worker)
    assert first is not None and first.id == "t1"
    assert first.status == TaskStatus.IN_PROGRESS and first.attempts == 1 and first.claimed_at is not None
    # t2 waits for t1; t3 is next; then u1 is at its limit of 2.
    assert store.claim_next_task(worker).id == "t3"  # type: ignore[union-attr]
    assert store.claim_next_task(worker) is None
    snapshot = store.demand_snapshot()
    assert (snapshot.queued, snapshot.claimable, snapshot.in_progress) == (2, 0, 3)
    assert store.demand_snapshot(per_user_limit=4).claimable == 1  # t4; t2 still waits for t1
    assert store.complete_task("t1", worker, {"ok": True})
    assert store.demand_snapshot().claimable == 1
    assert store.claim_next_task(worker).id == "t2"  # type: ignore[union-attr]


def test_demand_snapshot_counts(store: RpcStore, database_url: str) -> None:
    snapshot = store.demand_snapshot()
    assert (snapshot.queued, snapshot.claimable, snapshot.in_progress) == (0, 0, 0)
    assert snapshot.taken_at > 0
    store.insert_tasks([NewTask(task_type="t", user_id=f"u{i % 3}") for i in range(10)])
    # a task waiting for one that does not exist could never run: failed with the reason, no demand
    (orphan,) = store.insert_tasks([NewTask(task_type="t", user_id="u9", depends_on="nope")])
    snapshot = store.demand_snapshot(per_user_limit=3)
    assert (snapshot.queued, snapshot.claimable, snapshot.in_progress) == (10, 9, 0)
    failed = store.get_task(orphan)
    assert failed is not None and failed.status == TaskStatus.FAILED
    assert failed.error is not None and "nope" in failed.error and "does not exist" in failed.error
    store.configure_queue(per_user_limit=1, max_task_attempts=3)
    assert store.demand_snapshot().claimable == 3
    assert _queue_settings(database_url) == {"per_user_concurrency_limit": 1, "max_task_attempts": 3}


def test_complete_and_fail(store: RpcStore) -> None:
    store.configure_queue(per_user_limit=3, max_task_attempts=2)
    (task_id,) = store.insert_tasks([NewTask(task_type="t", user_id="u")])
    worker = _active_worker(store)
    assert not store.complete_task(task_id, worker)  # not claimed yet
    assert store.claim_next_task(worker) is not None
    assert not store.complete_task(task_id, "someone-else")
    assert store.fail_task(task_id, worker, "oom") == TaskStatus.QUEUED
    requeued = store.get_task(task_id)
    assert requeued is not None and requeued.worker_id is None and requeued.error == "oom"
    assert store.claim_next_task(worker) is not None
    assert store.fail_task(task_id, worker, "oom again") == TaskStatus.FAILED
    failed = store.get_task(task_id)
    assert failed is not None and failed.status == TaskStatus.FAILED and failed.attempts == 2
    assert failed.finished_at is not None
    assert store.fail_task(task_id, worker, "late") is None
    (other,) = store.insert_tasks([NewTask(task_type="t", user_id="u")])
    assert store.claim_next_task(worker) is not None
    assert store.complete_task(other, worker, {"url": "s3://x"})
    done = store.get_task(other)
    assert done is not None and done.status == TaskStatus.COMPLETE and done.result == {"url": "s3://x"}
    assert store.task_counts() == {TaskStatus.FAILED: 1, TaskStatus.COMPLETE: 1}


def test_requeue_worker_tasks(store: RpcStore) -> None:
    store.insert_tasks([NewTask(task_type="t", user_id=f"u{i}") for i in range(3)])
    worker = _active_worker(store)
    assert store.claim_next_task(worker) is not None
    assert store.claim_next_task(worker) is not None
    assert store.requeue_worker_tasks(worker) == 2
    assert store.requeue_worker_tasks(worker) == 0
    assert store.task_counts() == {TaskStatus.QUEUED: 3}
    assert all(t.worker_id is None for t in store.list_tasks())


def test_workers_lifecycle_and_events(store: RpcStore) -> None:
    worker_id = "gpu-20240101_000000-0000beef"
    row = store.create_worker(
        worker_id, reason="demand 3", gpu_type="RTX", trace_context="00-abc-def-01", metadata={"ram": 72}
    )
    assert row.status == WorkerState.SPAWNING and row.last_heartbeat_at is None
    assert row.metadata == {"ram": 72} and row.trace_context == "00-abc-def-01"
    again = store.create_worker(worker_id, reason="retry")  # idempotent by id
    assert again.created_at == row.created_at
    store.set_worker_pod(worker_id, "pod-1", "RTX 4090", {"volume": "v1"})
    assert store.worker_heartbeat(worker_id, {"vram_used_mb": 100}) == WorkerState.SPAWNING
    assert store.worker_heartbeat("nobody") is None
    got = store.get_worker(worker_id)
    assert got is not None and got.pod_id == "pod-1" and got.gpu_type == "RTX 4090"
    assert got.metadata == {"ram": 72, "volume": "v1", "vram_used_mb": 100}
    assert got.last_heartbeat_at is not None and got.status == WorkerState.SPAWNING  # heartbeat keeps status

    assert not store.transition_worker(worker_id, WorkerState.ACTIVE, WorkerState.DRAINING, "wrong expected")
    assert store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "first heartbeat")
    active = store.get_worker(worker_id)
    assert active is not None and active.promoted_at is not None
    assert active.tasks_in_progress == 0 and active.idle_since == active.promoted_at

    store.insert_tasks([NewTask(task_type="t", user_id="u")])
    task = store.claim_next_task(worker_id)
    assert task is not None
    busy = store.get_worker(worker_id)
    assert busy is not None and busy.tasks_in_progress == 1 and busy.idle_since is None
    # What the policy needs to see capacity on its way: when the held task was taken, and its type.
    assert busy.task_started_at == task.claimed_at and busy.task_type == "t"
    store.complete_task(task.id, worker_id)
    idle = store.get_worker(worker_id)
    finished = store.get_task(task.id)
    assert idle is not None and finished is not None and idle.idle_since == finished.finished_at
    assert idle.task_started_at is None and idle.task_type is None

    assert store.transition_worker(worker_id, None, WorkerState.TERMINATED, "idle 300s")
    gone = store.get_worker(worker_id)
    assert gone is not None and gone.terminated_at is not None and gone.termination_reason == "idle 300s"
    assert not store.transition_worker(worker_id, None, WorkerState.ACTIVE, "never leaves terminated")
    assert store.list_workers() == []
    assert [w.id for w in store.list_workers(include_terminated=True)] == [worker_id]
    assert store.get_worker("nobody") is None

    events = store.list_worker_events(worker_id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "spawning"),
        ("spawning", "active"),
        ("active", "terminated"),
    ]
    assert events[0].reason == "demand 3"
    assert store.list_worker_events(since=events[-1].at) == events[-1:]
    assert store.list_worker_events(until=events[0].at) == []
    assert store.list_worker_events(worker_id, limit=1) == events[-1:]


def test_given_times_are_kept(store: RpcStore) -> None:
    at = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    store.create_worker("w", reason="replay", created_at=at)
    assert store.transition_worker("w", WorkerState.SPAWNING, WorkerState.ACTIVE, "hb", at=at + timedelta(minutes=2))
    row = store.get_worker("w")
    assert row is not None and row.created_at == at and row.promoted_at == at + timedelta(minutes=2)


def test_decisions(store: RpcStore) -> None:
    lease = store.acquire_leader_lease("scaler", "host-a", 30)
    decision = DecisionRecord(
        cycle_number=7,
        leader_epoch=lease.epoch,
        holder="host-a",
        inputs={"queued": 4, "claimable": 3},
        spawn_count=2,
        drain_worker_ids=["w1"],
        reasons=["claimable 3 > capacity 1"],
        breaker={"status": "closed"},
        trace_id="abc",
        kind=DecisionKind.SCALE_UP,  # stored as decided, read back as the enum
    )
    decision_id = store.record_decision(decision)
    store.set_decision_spawned(decision_id, ["w2", "w3"])
    (got,) = store.list_decisions()
    assert got.id == decision_id and got.at is not None
    assert got.model_dump(exclude={"id", "at", "spawned_worker_ids"}) == decision.model_dump(
        exclude={"id", "at", "spawned_worker_ids"}
    )
    assert got.spawned_worker_ids == ["w2", "w3"]
    assert store.list_decisions(since=got.at + timedelta(seconds=1)) == []
    second = store.record_decision(decision.model_copy(update={"cycle_number": 8}))
    assert [d.id for d in store.list_decisions()] == [decision_id, second]
    assert [d.id for d in store.list_decisions(limit=1)] == [second]


def test_leader_lease_and_fencing(store: RpcStore) -> None:
    a = store.acquire_leader_lease("scaler", "a", 30)
    assert a.acquired and a.holder == "a" and a.expires_at > store.now()
    b = store.acquire_leader_lease("scaler", "b", 30)
    assert not b.acquired and b.holder == "a" and b.epoch == a.epoch
    again = store.acquire_leader_lease("scaler", "a", 30)
    assert again.acquired and again.epoch == a.epoch and again.expires_at >= a.expires_at
    current = store.get_leader_lease("scaler")
    assert current is not None and current.holder == "a" and current.acquired
    assert store.get_leader_lease("other") is None

    store.release_leader_lease("scaler", "a", a.epoch)
    b = store.acquire_leader_lease("scaler", "b", 30)
    assert b.acquired and b.epoch > a.epoch
    assert not store.acquire_leader_lease("scaler", "a", 30).acquired  # the deposed holder cannot take it back
    stale = DecisionRecord(
        cycle_number=1, leader_epoch=a.epoch, holder="a", inputs={}, spawn_count=1, drain_worker_ids=[], reasons=["x"]
    )
    with pytest.raises(StaleEpoch):
        store.record_decision(stale)
    with pytest.raises(StaleEpoch):
        store.create_worker("w-stale", reason="spawn", epoch=a.epoch)
    assert store.get_worker("w-stale") is None
    store.create_worker("w-ok", reason="spawn", epoch=b.epoch)
    with pytest.raises(StaleEpoch):
        store.transition_worker("w-ok", WorkerState.SPAWNING, WorkerState.ERROR, "timeout", epoch=a.epoch)
    assert store.transition_worker("w-ok", WorkerState.SPAWNING, WorkerState.ERROR, "timeout", epoch=b.epoch)
    assert store.list_worker_events("w-ok")[-1].epoch == b.epoch
    assert store.record_decision(stale.model_copy(update={"leader_epoch": b.epoch, "holder": "b"})) > 0


def test_lease_takeover_after_expiry(store: RpcStore) -> None:
    a = store.acquire_leader_lease("scaler", "a", 0.2)
    import time

    time.sleep(0.3)
    b = store.acquire_leader_lease("scaler", "b", 30)
    assert b.acquired and b.holder == "b" and b.epoch > a.epoch
    with pytest.raises(StaleEpoch):
        store.create_worker("w", reason="late", epoch=a.epoch)


def test_system_logs(store: RpcStore) -> None:
    result = store.insert_system_logs([_log(i) for i in range(5)])
    assert (result.inserted, result.duplicates, result.rejected) == (5, 0, [])
    replay = store.insert_system_logs([_log(i) for i in range(3, 8)])
    assert (replay.inserted, replay.duplicates) == (3, 2)
    logs = store.list_system_logs()
    assert [r.id for r in logs] == [f"log-{i}" for i in range(8)]
    assert logs[0] == _log(0)
    window = store.list_system_logs(since=_log(2).at, until=_log(4).at)
    assert [r.id for r in window] == ["log-2", "log-3"]
    assert store.list_system_logs(source_id="nobody") == []
    assert [r.id for r in store.list_system_logs(limit=2)] == ["log-6", "log-7"]
    full = _log(
        100,
        worker_id="w",
        task_id="t",
        trace_id="tr",
        cycle_number=9,
        logger="x.y",
        attributes={"k": [1, 2]},
        source_type="worker",
        level="ERROR",
    )
    store.insert_system_logs([full])
    assert store.list_system_logs(source_id="scaler", since=full.at) == [full]


def test_system_logs_rejects_bad_rows_without_counting_them(store: RpcStore) -> None:
    good = _log(1).model_dump(mode="json")
    rows = [
        good,
        {**_log(2).model_dump(mode="json"), "level": "LOUD"},
        {**_log(3).model_dump(mode="json"), "source_type": "pod"},
        {**_log(4).model_dump(mode="json"), "message": None},
        {**_log(5).model_dump(mode="json"), "at": "yesterday-ish"},
        {**_log(6).model_dump(mode="json"), "at": "2024-02-30T00:00:00Z"},
        {**_log(7).model_dump(mode="json"), "id": None},
        {**_log(8).model_dump(mode="json"), "cycle_number": 1.5},
        {**_log(9).model_dump(mode="json"), "attributes": [1]},
        _log(10).model_dump(mode="json"),
    ]
    result = store.insert_system_log_dicts(rows)
    assert result.inserted == 2 and result.duplicates == 0
    assert [r.index for r in result.rejected] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert result.rejected[0].id == "log-2" and "LOUD" in result.rejected[0].reason
    assert "source_type" in result.rejected[1].reason
    assert "message" in result.rejected[2].reason
    assert "at" in result.rejected[3].reason and "at" in result.rejected[4].reason
    assert result.rejected[5].id is None and "id" in result.rejected[5].reason
    assert [r.id for r in store.list_system_logs()] == ["log-1", "log-10"]


def test_now_is_the_database_clock(store: RpcStore) -> None:
    now = store.now()
    assert now.tzinfo is not None and abs(now - datetime.now(UTC)) < timedelta(minutes=1)


def test_unique_ids_of_generated_tasks(store: RpcStore) -> None:
    ids = store.insert_tasks([NewTask(task_type="t", user_id="u") for _ in range(50)])
    assert len(set(ids)) == 50
    assert all(uuid.UUID(i) for i in ids)


def test_explain_silences(store: RpcStore) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    store.insert_system_logs([_log(i, id=f"o-{i}", at=at(i)) for i in (0, 10, 20, 200)])
    store.insert_system_logs([_log(100, source_type="worker", source_id="w")])  # not the orchestrator
    lease = store.acquire_leader_lease("scaler", "a", 30)
    decision = DecisionRecord(
        at=at(210),
        cycle_number=1,
        leader_epoch=lease.epoch,
        holder="a",
        inputs={},
        spawn_count=0,
        drain_worker_ids=[],
        reasons=["steady"],
    )
    store.record_decision(decision)
    signals = store.explain_silences(at(15), at(205), 30)
    assert signals.gaps == [SignalGap(start=at(20), end=at(200))]
    assert (signals.last_before, signals.first_after) == (at(10), at(210))
    assert (signals.first_inside, signals.last_inside, signals.signals_inside) == (at(20), at(200), 2)
    after = store.explain_silences(at(205), at(400), 30)
    assert after.gaps == [] and after.first_after is None and after.last_inside == at(210)
    assert store.explain_silences(at(-100), at(-50), 30).last_before is None


def test_worker_tasks(store: RpcStore) -> None:
    ids = store.insert_tasks([NewTask(task_type="t", user_id="u", id=f"t{i}") for i in range(4)])
    worker = _active_worker(store)
    other = _active_worker(store, "gpu-20240101_000000-bbbbbbbb")
    assert store.claim_next_task(worker) is not None
    assert store.claim_next_task(other) is not None
    assert store.claim_next_task(worker) is not None
    assert store.complete_task(ids[0], worker)
    assert [t.id for t in store.worker_tasks(worker)] == [ids[0], ids[2]]  # oldest claim first
    assert [t.status for t in store.worker_tasks(worker)] == [TaskStatus.COMPLETE, TaskStatus.IN_PROGRESS]
    assert [t.id for t in store.worker_tasks(worker, limit=1)] == [ids[0]]
    assert store.worker_tasks("nobody") == []


def test_orchestrator_starts_and_stops(store: RpcStore) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    store.record_orchestrator_event(OrchestratorEventKind.STARTED, "host-a/scaler", "leads with epoch 1", at=t0)
    store.record_orchestrator_event(
        OrchestratorEventKind.STOPPED, "host-a/scaler", "orchestrator down", at=t0 + timedelta(seconds=60)
    )
    now_id = store.record_orchestrator_event(OrchestratorEventKind.STARTED, "host-b/scaler", "leads with epoch 2")
    got = store.list_orchestrator_events()
    assert [(e.kind, e.holder, e.reason) for e in got] == [
        (OrchestratorEventKind.STARTED, "host-a/scaler", "leads with epoch 1"),
        (OrchestratorEventKind.STOPPED, "host-a/scaler", "orchestrator down"),
        (OrchestratorEventKind.STARTED, "host-b/scaler", "leads with epoch 2"),
    ]
    assert got[-1].id == now_id and got[0].at == t0
    assert [e.reason for e in store.list_orchestrator_events(until=t0 + timedelta(seconds=61), limit=1)] == [
        "orchestrator down"
    ]
    # A recorded start or stop is a signal of the orchestrator: no silence around it.
    signals = store.explain_silences(t0 - timedelta(seconds=1), t0 + timedelta(seconds=90), 30)
    assert signals.signals_inside == 2 and signals.first_after == got[-1].at
    assert signals.gaps[0] == SignalGap(start=t0, end=t0 + timedelta(seconds=60))
    with pytest.raises(StoreError):
        store.record_orchestrator_event("paused", "h", "no such kind")  # type: ignore[arg-type]
