"""requeue_worker_tasks honours max_task_attempts (native queue, over both stores): a task lost with
its worker goes back to the queue with the attempt counted, and once its attempts reach the limit it
is Failed with the reason, the same wording as the reigh profile's requeue."""

from __future__ import annotations

from fleet.models import WorkerState
from store.base import NewTask, TaskStatus
from store.rpc import RpcStore


def _lose_worker_holding(store: RpcStore, worker_id: str, task_id: str) -> int:
    store.create_worker(worker_id, reason="test")
    assert store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "test: promoted")
    claimed = store.claim_next_task(worker_id)
    assert claimed is not None and claimed.id == task_id
    return store.requeue_worker_tasks(worker_id)


def test_a_task_that_keeps_losing_its_worker_fails_at_max_attempts(store: RpcStore) -> None:
    store.configure_queue(per_user_limit=3, max_task_attempts=3)
    (poison,) = store.insert_tasks([NewTask(task_type="t", user_id="u", id="poison")])
    for attempt in (1, 2):
        assert _lose_worker_holding(store, f"gpu-lost-{attempt}", poison) == 1
        task = store.get_task(poison)
        assert task is not None and task.status == TaskStatus.QUEUED and task.worker_id is None
        assert task.attempts == attempt and task.finished_at is None
        assert task.error == f"worker gpu-lost-{attempt} was lost while running it (attempt {attempt} of 3); requeued"
    assert _lose_worker_holding(store, "gpu-lost-3", poison) == 1
    failed = store.get_task(poison)
    assert failed is not None and failed.status == TaskStatus.FAILED and failed.attempts == 3
    assert failed.error == "worker gpu-lost-3 was lost while running it; 3 attempts reached"
    assert failed.worker_id == "gpu-lost-3" and failed.finished_at is not None
    assert store.requeue_worker_tasks("gpu-lost-3") == 0  # nothing left In Progress
    assert store.demand_snapshot().queued == 0  # a Failed task asks for no pod


def test_the_limit_is_the_queue_setting(store: RpcStore) -> None:
    store.configure_queue(per_user_limit=3, max_task_attempts=1)
    (task_id,) = store.insert_tasks([NewTask(task_type="t", user_id="u")])
    assert _lose_worker_holding(store, "gpu-once", task_id) == 1
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED and task.attempts == 1
