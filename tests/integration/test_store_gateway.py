"""The StoreGateway: a lifecycle's store and pod reads through one small pool, on a real Postgres.

First without Ray (the gateway's calls in this process), then through the session's Ray: errors
arrive as themselves, and a SIGKILLed gateway comes back and serves the same callers again.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from actors import store_gateway
from cloud import base as cloud
from config.settings import OrchestratorSettings
from fleet.models import WorkerState
from store import base as store_base
from tests.support.fleet_harness import sigkill
from tests.support.polling import wait_for
from tests.support.runpod_api import FakeRunPodApi


def _settings(database_url: str, tmp_path: Path, **provider: Any) -> OrchestratorSettings:
    return OrchestratorSettings(
        database={"backend": "postgres", "url": database_url, "gateway_pool_size": 2},
        provider=provider or {"kind": "local"},
        ray={"namespace": "store-gateway-test"},
        state_dir=tmp_path,
    )


def _in_process(gateway: store_gateway.StoreGateway) -> store_gateway.GatewayCall:
    return lambda method, args: getattr(gateway, method)(*args)


def _connections(database_url: str, application_name: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_every_store_method_by_name_through_a_pool_of_its_own_size(database_url: str, tmp_path: Path) -> None:
    settings = _settings(database_url, tmp_path)
    gateway = store_gateway.StoreGateway(start=False)
    store = store_gateway.gateway_store(settings, _in_process(gateway))
    try:
        store.create_worker("gpu-gw-1", reason="test")
        row = store.get_worker("gpu-gw-1")
        assert row is not None and row.status is WorkerState.SPAWNING
        assert store.transition_worker("gpu-gw-1", WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: test")
        assert not store.transition_worker("gpu-gw-1", WorkerState.SPAWNING, WorkerState.ACTIVE, "again")
        assert [e.to_status for e in store.list_worker_events(worker_id="gpu-gw-1")][-1] == "active"
        assert isinstance(store.task_counts(), dict)  # any method of the store, no list kept here

        # The database clock: read once, then an offset (no call) until the next resync.
        calls = gateway.status()["calls"]
        first, second = store.now(), store.now()
        assert second >= first and gateway.status()["calls"] == calls + 1

        # Many callers at once share the gateway's pool: never more than gateway_pool_size connections.
        errors: list[BaseException] = []

        def read() -> None:
            try:
                for _ in range(20):
                    store.get_worker("gpu-gw-1")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert 1 <= _connections(database_url, "gpu-orchestrator") <= settings.database.gateway_pool_size

        # An entry closed as idle releases its connections; the next call opens it again.
        assert gateway.close_idle(now=float("inf")) == 1
        wait_for(lambda: _connections(database_url, "gpu-orchestrator") == 0, 10, "connections released")
        assert store.get_worker("gpu-gw-1") is not None

        with pytest.raises(AttributeError):
            store.wait_for_task_change(0.1)  # the LISTEN wait would hold a gateway thread: not forwarded
        with pytest.raises(AttributeError):
            gateway.call(store_gateway.gateway_key(settings), "_call", (), {})
    finally:
        gateway.stop()


@pytest.mark.ray
def test_through_ray_errors_arrive_as_themselves_and_a_killed_gateway_comes_back(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    import ray

    from actors import remote

    with FakeRunPodApi(api_key="gateway-key") as api:
        settings = _settings(
            database_url, tmp_path, kind="runpod", runpod_api_key=api.api_key, runpod_api_base_url=api.base_url
        )
        handle = remote.get_or_create_store_gateway(settings)
        try:
            store = remote.gateway_store(settings)
            provider = remote.gateway_provider(settings)
            store.create_worker("gpu-gw-2", reason="test")
            store.transition_worker("gpu-gw-2", WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: test")
            store.acquire_leader_lease("scaler", "test-holder", 30.0)
            with pytest.raises(store_base.StaleEpoch):
                store.transition_worker("gpu-gw-2", WorkerState.ACTIVE, WorkerState.DRAINING, "drain", epoch=999)

            # Pod reads: from the gateway's shared list, a pod not on it asked for (NotFound as itself).
            pod_id = api.add_pod("gpu-gw-2")
            assert provider.get(pod_id).name == "gpu-gw-2"
            assert [p.id for p in provider.list("gpu-gw-")] == [pod_id]
            with pytest.raises(cloud.NotFound):
                provider.get("nosuchpod12345")
            lists = api.count("pods")
            for _ in range(5):
                provider.get(pod_id)
            assert api.count("pods") <= lists + 1, "reads within the list's age make no provider call"

            # SIGKILL: Ray restarts the gateway; the same callers are served again (entry re-opened).
            pid = ray.get(handle.pid.remote(), timeout=30)
            sigkill(pid)

            def served() -> bool:
                row = store.get_worker("gpu-gw-2")
                return row is not None and provider.get(pod_id).id == pod_id

            wait_for(served, 60, "the restarted gateway serving the same callers", interval_s=0.5)
            assert ray.get(handle.pid.remote(), timeout=30) != pid
        finally:
            ray.kill(handle, no_restart=True)
