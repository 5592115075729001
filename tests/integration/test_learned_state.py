"""The policy's learned demand memory round-trips through the database: a restarted Scaler rebuilds
from the decisions it reads back (`fleet.learning.memory_from_decisions`) what the live one learned."""

from __future__ import annotations

from config.settings import ScalingSettings
from fleet import learning, policy
from fleet.models import DemandSnapshot, FleetHistory
from store.base import DecisionRecord
from store.rpc import RpcStore


def test_learned_demand_round_trips_through_the_database(store: RpcStore) -> None:
    lease = store.acquire_leader_lease("scaler", "host-a", 30)
    history = FleetHistory()
    written = []
    now = store.now().timestamp()
    for k, demand in enumerate([0, 1, 3, 3, 2, 0, 4, 4, 1]):
        snapshot = DemandSnapshot(queued=demand, claimable=demand, in_progress=0, taken_at=now)
        d = policy.decide(policy.PolicyContext(snapshot, [], history, ScalingSettings(), now))
        history = d.history
        store.record_decision(
            DecisionRecord(
                cycle_number=k,
                leader_epoch=lease.epoch,
                holder="host-a",
                inputs=d.inputs,
                spawn_count=d.spawn,
                drain_worker_ids=list(d.drain),
                reasons=list(d.reasons),
                kind=d.kind,
            )
        )
        written.append(d.inputs)
    read = store.list_decisions()
    assert len(read) == len(written)
    at = [r.at.timestamp() for r in read if r.at is not None]
    end = max(at) + 1
    rebuilt = learning.memory_from_decisions(zip(at, [r.inputs for r in read], strict=True), end)
    expected = learning.memory_from_decisions(zip(at, written, strict=True), end)
    assert rebuilt == expected
    assert [demand for _, demand in rebuilt.points] == [0, 1, 3, 2, 0, 4, 1]
