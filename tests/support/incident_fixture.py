"""The evening of the 17:55 incident (seed/forensic-report-17-55-scale-up.md) as database rows.

Everything the report reconstructs by hand, at the report's times on 2025-10-16 (UTC): the workers
and every transition, the decisions a recording orchestrator would have written for the scale-ups
it could explain, the worker's task claims, and the orchestrator's cycle logs every 10 s until
17:35:31 (cycle #638), then nothing from the orchestrator until the 17:55:06 decision, after which
it logs every cycle again. The two workers created at 17:42 have no decision row, as in the
report, where the orchestrator's record of them was lost.

Rows go in through the Store (create_worker / transition_worker with `at=`, record_decision with
`at`, insert_system_logs); the few facts the store stamps with now() (task claims, heartbeats) are
back-dated with one UPDATE through the PostgresStore's pool, as a replay of history must.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet.models import WorkerState
from store.base import DecisionRecord, LogRecord, NewTask, Store

DAY = datetime(2025, 10, 16, tzinfo=UTC)
CYCLE_INTERVAL_S = 10.0
HOLDER = "scaler@orchestrator-railway"

W_1730 = "gpu-20251016_173023-673741fb"
W_1742A = "gpu-20251016_174249-34c67fdd"
W_1742B = "gpu-20251016_174252-9356e3ac"
W_1755A = "gpu-20251016_175506-a6a03b7b"
W_1755B = "gpu-20251016_175532-78a04c2b"

TASK_ORCHESTRATOR = "51e36aa5-7d2e-4c11-9a0b-3f1e2d4c5b6a"
TASK_SEGMENT = "ef5a11b0-2c3d-4e5f-8a9b-0c1d2e3f4a5b"

TRACE_1755A = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

LAST_LOG_AT = DAY.replace(hour=17, minute=35, second=31)
LAST_LOG_CYCLE = 638
SPAWN_1755_AT = DAY.replace(hour=17, minute=55, second=6)


def at(hms: str) -> datetime:
    """17:55:06 on the incident's day, UTC."""
    hour, minute, second = (int(part) for part in hms.split(":"))
    return DAY.replace(hour=hour, minute=minute, second=second)


@dataclass
class Incident:
    """What the fixture wrote, for assertions."""

    epoch: int
    decision_ids: dict[str, int] = field(default_factory=dict)  # "HH:MM:SS" -> id
    silence_start: datetime = LAST_LOG_AT
    silence_end: datetime = SPAWN_1755_AT


def _decision(
    store: Store,
    epoch: int,
    hms: str,
    cycle: int,
    *,
    inputs: dict[str, Any],
    reasons: list[str],
    spawn: int = 0,
    drain: list[str] | None = None,
) -> int:
    return store.record_decision(
        DecisionRecord(
            at=at(hms),
            cycle_number=cycle,
            leader_epoch=epoch,
            holder=HOLDER,
            inputs=inputs,
            spawn_count=spawn,
            drain_worker_ids=drain or [],
            reasons=reasons,
            breaker={"status": "closed"},
        )
    )


def _inputs(**values: Any) -> dict[str, Any]:
    base = {
        "queued": 0,
        "claimable": 0,
        "in_progress": 0,
        "tasks_per_worker": 1,
        "min_workers": 0,
        "max_workers": 10,
        "breaker": "closed",
        "failure_rate": 0.0,
        "workers_spawning": 0,
        "workers_active": 0,
        "workers_draining": 0,
        "workers_terminating": 0,
        "workers_error": 0,
    }
    base.update(values)
    return base


def _walk(
    store: Store, worker_id: str, steps: list[tuple[str, WorkerState, str]], start: WorkerState = WorkerState.SPAWNING
) -> None:
    """Transitions of one worker, each compare-and-set from the state before it."""
    current = start
    for hms, state, reason in steps:
        assert store.transition_worker(worker_id, current, state, reason, at=at(hms)), (worker_id, hms, state)
        current = state


def _orchestrator_logs() -> list[LogRecord]:
    """A cycle log every 10 s from 17:25:01 to the last one at 17:35:31 (cycle #638), then again
    from the 17:55:06 decision (cycle #755) to 18:00:00, when the investigation started."""
    stamps = [(LAST_LOG_CYCLE - back, LAST_LOG_AT - timedelta(seconds=CYCLE_INTERVAL_S * back)) for back in range(64)]
    stamps += [(755 + n, SPAWN_1755_AT + timedelta(seconds=CYCLE_INTERVAL_S * n)) for n in range(30)]
    records = []
    for cycle, stamp in stamps:
        records.append(
            LogRecord(
                id=f"orch-cycle-{cycle}",
                at=stamp,
                level="INFO",
                source_type="orchestrator",
                source_id=HOLDER,
                message="Cycle completed: 0 spawned, 0 terminated",
                logger="actors.scaler",
                cycle_number=cycle,
            )
        )
    return records


def _worker_logs() -> list[LogRecord]:
    lines = [
        ("17:57:04", "Centralized logging enabled for worker", None),
        ("17:57:06", "claimed travel_orchestrator task 51e36aa5", TASK_ORCHESTRATOR),
        ("17:57:08", "claimed travel_segment task ef5a11b0", TASK_SEGMENT),
    ]
    return [
        LogRecord(
            id=f"w-{W_1755A}-{i}",
            at=at(hms),
            level="INFO",
            source_type="worker",
            source_id=W_1755A,
            worker_id=W_1755A,
            task_id=task_id,
            message=message,
        )
        for i, (hms, message, task_id) in enumerate(lines)
    ]


def build_incident(store: Store) -> Incident:
    """Write the evening into an empty, migrated database."""
    lease = store.acquire_leader_lease("scaler", HOLDER, ttl_s=3600)
    assert lease.acquired
    incident = Incident(epoch=lease.epoch)
    epoch = lease.epoch

    # 17:30-17:32: the previous scale-up cycle.
    incident.decision_ids["17:30:23"] = d = _decision(
        store,
        epoch,
        "17:30:23",
        605,
        spawn=1,
        inputs=_inputs(queued=1, claimable=1, desired=1, capacity=0, need=1),
        reasons=[
            "scale_up: spawn 1 because desired 1 = ceil((claimable 1 + in_progress 0) / tasks_per_worker 1) = 1; "
            "capacity 0 (active 0, spawning 0); breaker closed"
        ],
    )
    store.create_worker(W_1730, reason="spawn: decision at 17:30:23", epoch=epoch, created_at=at("17:30:23"))
    store.set_decision_spawned(d, [W_1730])
    _walk(
        store,
        W_1730,
        [
            ("17:31:31", WorkerState.ACTIVE, "first heartbeat after 68 s"),
            ("17:31:58", WorkerState.DRAINING, "scale-down: surplus 1, idle 27 s"),
            ("17:32:00", WorkerState.TERMINATING, "drained: no task in progress"),
            ("17:32:02", WorkerState.TERMINATED, "Normal termination"),
        ],
    )
    incident.decision_ids["17:31:58"] = _decision(
        store,
        epoch,
        "17:31:58",
        614,
        drain=[W_1730],
        inputs=_inputs(desired=0, capacity=1, surplus=1, workers_active=1),
        reasons=[f"scale_down: drain 1 ({W_1730} idle 27s) because surplus 1; min_workers 0"],
    )
    store.insert_system_logs(_orchestrator_logs())

    # 17:35:31: the last orchestrator log. 17:42: two workers, no decision recorded.
    store.create_worker(W_1742A, reason="spawn (decision not recorded)", created_at=at("17:42:49"))
    store.create_worker(W_1742B, reason="spawn (decision not recorded)", created_at=at("17:42:52"))
    _walk(store, W_1742A, [("17:43:49", WorkerState.ACTIVE, "first heartbeat after 60 s")])
    _walk(
        store,
        W_1742B,
        [
            ("17:52:52", WorkerState.ERROR, "spawn timeout: no first heartbeat in 600 s"),
            ("17:52:53", WorkerState.TERMINATING, "error: terminating the pod"),
            ("17:53:01", WorkerState.TERMINATED, "pod gone after spawn timeout"),
        ],
    )

    # 17:54: demand arrives.
    store.insert_tasks(
        [
            NewTask(id=TASK_ORCHESTRATOR, task_type="travel_orchestrator", user_id="user-a", created_at=at("17:54:50")),
            NewTask(id=TASK_SEGMENT, task_type="travel_segment", user_id="user-a", created_at=at("17:54:51")),
        ]
    )

    # 17:55:06: the investigated scale-up, now with its inputs and reasons.
    incident.decision_ids["17:55:06"] = d = _decision(
        store,
        epoch,
        "17:55:06",
        755,
        spawn=1,
        inputs=_inputs(
            queued=2,
            claimable=2,
            desired=2,
            capacity=1,
            need=1,
            workers_active=1,
            failure_rate=0.3333,
            attempts_in_window=3,
            failures_in_window=1,
        ),
        reasons=[
            "scale_up: spawn 1 because desired 2 = ceil((claimable 2 + in_progress 0) / tasks_per_worker 1) = 2; "
            "capacity 1 (active 1, spawning 0); breaker closed (failure rate 0.33 over 3 attempts < 0.5)"
        ],
    )
    store.create_worker(
        W_1755A,
        reason="spawn: decision at 17:55:06",
        epoch=epoch,
        gpu_type="NVIDIA GeForce RTX 4090",
        trace_context=TRACE_1755A,
        metadata={"ram_tier": 60, "storage_volume": "Peter", "vram_total_mb": 24080},
        created_at=at("17:55:06"),
    )
    store.set_decision_spawned(d, [W_1755A])
    store.set_worker_pod(W_1755A, "e72lqfpbzb0l94", "NVIDIA GeForce RTX 4090", {"ssh": "213.173.108.166:10121"})

    incident.decision_ids["17:55:32"] = d = _decision(
        store,
        epoch,
        "17:55:32",
        757,
        spawn=1,
        inputs=_inputs(queued=3, claimable=3, desired=3, capacity=2, need=1, workers_active=1, workers_spawning=1),
        reasons=[
            "scale_up: spawn 1 because desired 3 = ceil((claimable 3 + in_progress 0) / tasks_per_worker 1) = 3; "
            "capacity 2 (active 1, spawning 1); breaker closed"
        ],
    )
    store.create_worker(W_1755B, reason="spawn: decision at 17:55:32", epoch=epoch, created_at=at("17:55:32"))
    store.set_decision_spawned(d, [W_1755B])
    store.set_worker_pod(W_1755B, "nhayz899m91qyt", "NVIDIA GeForce RTX 4090")

    _walk(store, W_1755A, [("17:56:02", WorkerState.ACTIVE, "first heartbeat after 56 s")])
    for _ in range(2):
        assert store.claim_next_task(W_1755A) is not None
    store.insert_system_logs(_worker_logs())
    _walk(store, W_1755B, [("17:58:09", WorkerState.ACTIVE, "first heartbeat after 157 s")])

    incident.decision_ids["17:59:08"] = _decision(
        store,
        epoch,
        "17:59:08",
        780,
        drain=[W_1755B],
        inputs=_inputs(queued=0, claimable=0, in_progress=2, desired=2, capacity=3, surplus=1, workers_active=3),
        reasons=[f"scale_down: drain 1 ({W_1755B} idle 59s) because surplus 1; min_workers 0"],
    )
    _walk(
        store,
        W_1755B,
        [
            ("17:59:08", WorkerState.DRAINING, "scale-down: surplus 1, idle 59 s"),
            ("17:59:08", WorkerState.TERMINATING, "drained: no task in progress"),
            ("17:59:09", WorkerState.TERMINATED, "Normal termination"),
        ],
        start=WorkerState.ACTIVE,
    )
    _backdate(store)
    return incident


def _backdate(store: Store) -> None:
    """Claims and heartbeats at the report's times (the store stamps them with now())."""
    pool = getattr(store, "pool", None)
    if pool is None:
        return
    with pool.connection() as conn:
        conn.execute("UPDATE tasks SET claimed_at = %s WHERE id = %s", (at("17:57:06"), TASK_ORCHESTRATOR))
        conn.execute("UPDATE tasks SET claimed_at = %s WHERE id = %s", (at("17:57:08"), TASK_SEGMENT))
        conn.execute("UPDATE workers SET last_heartbeat_at = %s WHERE id = %s", (at("18:00:00"), W_1755A))
        conn.execute("UPDATE workers SET last_heartbeat_at = %s WHERE id = %s", (at("17:59:00"), W_1755B))
        conn.execute("UPDATE workers SET last_heartbeat_at = %s WHERE id = %s", (at("18:00:00"), W_1742A))
        conn.execute("UPDATE workers SET last_heartbeat_at = %s WHERE id = %s", (at("17:31:50"), W_1730))
