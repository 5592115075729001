"""Fencing without holes, on a real Postgres: the epoch check and the write it guards are never split
by a takeover, and every Scaler incarnation holds the lease under an identity of its own.

The interleavings are forced with two connections and a lock, never with sleeps: a takeover held
open in a transaction of its own while a fenced write starts, and a fenced write held between its
check and its insert (a table lock) while a takeover starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from actors.scaler import Scaler
from store.base import DecisionRecord, StaleEpoch
from store.postgres import PostgresStore
from store.rpc import RpcStore
from tests.support.fleet_harness import fast_settings
from tests.support.polling import wait_for


@pytest.fixture
def pg(database_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(database_url, min_size=1, max_size=4, application_name="fenced-writer")
    yield s
    s.close()


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _waiting_on_a_lock(database_url: str, application_name: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        ).fetchone()
    return bool(row and row[0])


def _decision(epoch: int) -> DecisionRecord:
    return DecisionRecord(
        cycle_number=1, leader_epoch=epoch, holder="a", inputs={}, spawn_count=1, drain_worker_ids=[], reasons=["x"]
    )


def test_a_fenced_write_that_meets_a_takeover_in_flight_is_refused(pg: PostgresStore, database_url: str) -> None:
    store = pg
    a = store.acquire_leader_lease("scaler", "a", 30)
    store.release_leader_lease("scaler", "a", a.epoch)  # A's lease lapses; B may take it
    with psycopg.connect(database_url, application_name="taker") as taker:
        # B's takeover, not yet committed: it holds the lease row.
        taker.execute("SELECT orchestrator.acquire_leader_lease('scaler', 'b', 30)")
        thread, out = _in_thread(lambda: store.create_worker("gpu-stale", reason="stale: A's spawn", epoch=a.epoch))
        wait_for(
            lambda: _waiting_on_a_lock(database_url, "fenced-writer") or not thread.is_alive(), 10, "A's write runs"
        )
        taker.commit()
    thread.join(10)
    assert isinstance(out.get("error"), StaleEpoch), out
    assert store.get_worker("gpu-stale") is None, "the stale write was refused, not applied after the takeover"
    b = store.get_leader_lease("scaler")
    assert b is not None and b.holder == "b" and b.epoch > a.epoch


def test_a_takeover_waits_for_a_fenced_write_already_past_its_check(pg: PostgresStore, database_url: str) -> None:
    store = pg
    a = store.acquire_leader_lease("scaler", "a", 30)
    store.release_leader_lease("scaler", "a", a.epoch)
    b_store = PostgresStore(database_url, min_size=1, max_size=1, application_name="taker")
    try:
        with psycopg.connect(database_url, application_name="blocker") as blocker:
            # Holds A's write between its epoch check and its insert into worker_events.
            blocker.execute("LOCK TABLE orchestrator.worker_events IN EXCLUSIVE MODE")
            writer, written = _in_thread(lambda: store.create_worker("gpu-a", reason="scale_up: A", epoch=a.epoch))
            wait_for(lambda: _waiting_on_a_lock(database_url, "fenced-writer"), 10, "A's write is past its check")
            taker, taken = _in_thread(lambda: b_store.acquire_leader_lease("scaler", "b", 30))
            wait_for(lambda: _waiting_on_a_lock(database_url, "taker") or not taker.is_alive(), 10, "B's takeover runs")
            assert taker.is_alive(), "the takeover must wait for a fenced write already past its check"
            blocker.commit()  # A's write goes on and commits; only then does B take the lease
        writer.join(10)
        taker.join(10)
        assert "error" not in written, written
        lease = taken["value"]
        assert lease.acquired and lease.holder == "b" and lease.epoch > a.epoch
        with pytest.raises(StaleEpoch):
            store.record_decision(_decision(a.epoch))
    finally:
        b_store.close()


def test_a_restarted_scaler_is_a_new_holder_with_a_new_epoch_and_fences_its_predecessor(store: RpcStore) -> None:
    # `store`: once over Postgres, once over the Supabase REST store (tests/integration/conftest.py).
    first = store.acquire_leader_lease("scaler", "host/gcs/scaler#0001", 30, successor_of="host/gcs/scaler")
    # The same actor restarted by Ray (its predecessor may live on, partitioned): it takes over at
    # once, under its own identity and a new epoch.
    second = store.acquire_leader_lease("scaler", "host/gcs/scaler#0002", 30, successor_of="host/gcs/scaler")
    assert second.acquired and second.epoch > first.epoch
    with pytest.raises(StaleEpoch):
        store.record_decision(_decision(first.epoch))
    # The predecessor renews no more (it is not the holder) and never takes it back while it is valid.
    assert not store.acquire_leader_lease("scaler", "host/gcs/scaler#0001", 30).acquired
    # Another lineage cannot use succession to take a valid lease.
    other = store.acquire_leader_lease("scaler", "other/scaler#0001", 30, successor_of="other/scaler")
    assert not other.acquired and other.holder == "host/gcs/scaler#0002"
    assert store.acquire_leader_lease("scaler", "host/gcs/scaler#0002", 30).epoch == second.epoch  # renewal


def test_every_scaler_incarnation_has_its_own_holder(database_url: str, tmp_path: Path) -> None:
    settings = fast_settings(database_url, tmp_path)

    class NoLifecycles:
        def __len__(self) -> int:
            return 0

        def ensure(self, worker_id: str) -> None: ...

        def drain(self, worker_id: str, reason: str, epoch: int | None) -> None: ...

        def keep_only(self, worker_ids: set[str]) -> None: ...

    one = Scaler(settings, holder="host/gcs/scaler", lifecycles=NoLifecycles(), start=False)
    two = Scaler(settings, holder="host/gcs/scaler", lifecycles=NoLifecycles(), start=False)
    try:
        assert one.holder != two.holder
        assert one.holder.startswith("host/gcs/scaler#") and two.holder.startswith("host/gcs/scaler#")
        one.step()
        assert one.status()["role"] == "leader"
        two.step()  # the restarted incarnation takes over at once, with a new epoch
        assert two.status()["role"] == "leader" and two.status()["epoch"] > one.status()["epoch"]
        one.step()  # the old one learns it is deposed and stands by
        assert one.status()["role"] == "standby"
    finally:
        one.stop()
        two.stop()
