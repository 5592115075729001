"""The pods' environment as seen from outside holds no credential of the orchestrator's own.

What the RunPod API was sent (the loopback RunPod stand-in records it, as the real API echoes env
back) and what a local pod's process really has in its environment (/proc, through psutil) are
scanned for every secret the orchestrator holds: its own database password, the service-role key,
the project's JWT secret, the RunPod key. The local pod runs the real reference worker with the
credential it was given: it heartbeats and ships its logs with it, and after termination that
credential no longer connects.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psutil
import psycopg
import pytest
from psycopg import sql

from actors import _telemetry, lifecycle
from cloud.retry import RetryPolicy
from cloud.runpod import RunPodProvider
from config.settings import OrchestratorSettings
from fleet.models import WorkerState
from store.postgres import PostgresStore
from store.supabase import SupabaseStore
from tests.support.fleet_harness import fast_settings
from tests.support.polling import wait_for
from tests.support.postgrest_standin import TEST_JWT_SECRET, PostgrestStandin
from tests.support.runpod_api import FakeRunPodApi

GPU = "NVIDIA GeForce RTX 4090"
RUNPOD_KEY = "rpa_PODENVTEST_0123456789abcdef"
OWN_PASSWORD = "orchestrator-own-db-password-5b1e"  # ignored by the test server (trust), never a pod's
SERVICE_KEY = "service-role-key-of-the-orchestrator-77c0"
JWT_SECRET = TEST_JWT_SECRET
ANON_KEY = "anon-key-public-by-design"


def _orchestrator_secrets() -> dict[str, str]:
    return {
        "database password": OWN_PASSWORD,
        "service-role key": SERVICE_KEY,
        "JWT secret": JWT_SECRET,
        "RunPod key": RUNPOD_KEY,
    }


def _scan(env: dict[str, str], where: str) -> None:
    for name, secret in _orchestrator_secrets().items():
        leaks = [key for key, value in env.items() if secret in value]
        assert not leaks, f"the orchestrator's {name} is in {where}: {leaks}"


@pytest.fixture
def own_url(database_url: str) -> Iterator[str]:
    """The orchestrator's conninfo, with a password of its own (the trusting test server ignores it)."""
    yield psycopg.conninfo.make_conninfo(database_url, password=OWN_PASSWORD)
    with psycopg.connect(database_url, autocommit=True) as conn:  # roles are cluster-wide
        prefix = conn.execute("SELECT orchestrator.worker_role_prefix()").fetchone()
        assert prefix is not None
        for (role,) in conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", prefix).fetchall():
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _runpod_settings(database: dict[str, Any], tmp_path: Path, api: FakeRunPodApi) -> OrchestratorSettings:
    return OrchestratorSettings(
        database=database,
        provider={
            "kind": "runpod",
            "runpod_api_key": RUNPOD_KEY,
            "runpod_api_base_url": api.base_url,
            "template": {"gpu_types": [GPU], "network_volumes": [], "ram_tiers_gb": [48]},
        },
        queue={"supabase_anon_key": ANON_KEY},
        state_dir=tmp_path,
    )


def _runpod(api: FakeRunPodApi) -> RunPodProvider:
    retry = RetryPolicy(max_attempts=2, max_seconds=5.0, base_delay_s=0.01, max_delay_s=0.05)
    return RunPodProvider(RUNPOD_KEY, base_url=api.base_url, retry=retry)


def _provision(settings: OrchestratorSettings, store: Any, provider: Any, worker_id: str) -> Any:
    store.create_worker(worker_id, reason="scale_up: test")
    return lifecycle.provision_pod(
        settings, store, provider, worker_id, None, _telemetry.lifecycle_trace(None, worker_id)
    )


def test_runpod_pods_get_their_own_credential_only(own_url: str, tmp_path: Path) -> None:
    worker_id = "gpu-20261201_061000-0c0c0c0c"
    database = {
        "backend": "postgres",
        "url": own_url,
        "supabase_url": "https://project.supabase.example",
        "supabase_service_role_key": SERVICE_KEY,
        "supabase_jwt_secret": JWT_SECRET,
    }
    with FakeRunPodApi(api_key=RUNPOD_KEY, gpu_types=[GPU], network_volumes=[]) as api:
        settings = _runpod_settings(database, tmp_path, api)
        store = PostgresStore(own_url, min_size=1, max_size=2)
        provider = _runpod(api)
        try:
            pod = _provision(settings, store, provider, worker_id)
            sent = api.pods[pod.id].env
            _scan(sent, "the env RunPod was sent")
            assert "SUPABASE_SERVICE_ROLE_KEY" not in sent
            role = psycopg.conninfo.conninfo_to_dict(sent["DATABASE_URL"])["user"]
            assert isinstance(role, str) and role.startswith("orchestrator_w_")
            with psycopg.connect(sent["DATABASE_URL"], autocommit=True) as pod_conn:
                beat = pod_conn.execute("SELECT orchestrator.worker_heartbeat(%s)", (worker_id,)).fetchone()
                assert beat == ("spawning",)
            # A second create call for the same pod (the lifecycle after the Scaler) finds the pod and
            # the same credential: the pod's env stays valid.
            again = _provision(settings, store, provider, worker_id)
            assert again.id == pod.id and api.pods[pod.id].env["DATABASE_URL"] == sent["DATABASE_URL"]
        finally:
            provider.close()
            store.close()


def test_supabase_pods_get_a_token_of_their_own(database_url: str, tmp_path: Path) -> None:
    worker_id = "gpu-20261201_061000-0d0d0d0d"
    with PostgrestStandin(database_url, service_key=SERVICE_KEY, anon_key=ANON_KEY) as standin:
        database = {
            "backend": "supabase",
            "supabase_url": standin.url,
            "supabase_service_role_key": SERVICE_KEY,
            "supabase_jwt_secret": JWT_SECRET,
        }
        with FakeRunPodApi(api_key=RUNPOD_KEY, gpu_types=[GPU], network_volumes=[]) as api:
            settings = _runpod_settings(database, tmp_path, api)
            store = SupabaseStore(standin.url, SERVICE_KEY, retries=0)
            provider = _runpod(api)
            try:
                pod = _provision(settings, store, provider, worker_id)
                sent = api.pods[pod.id].env
                _scan(sent, "the env RunPod was sent")
                assert "SUPABASE_SERVICE_ROLE_KEY" not in sent and "DATABASE_URL" not in sent
                claims = jwt.decode(sent["SUPABASE_WORKER_TOKEN"], JWT_SECRET, algorithms=["HS256"])
                assert claims["role"] == "orchestrator_worker" and claims["worker_id"] == worker_id
                assert sent["SUPABASE_ANON_KEY"] == ANON_KEY
                from store.factory import open_store_from_env

                worker = open_store_from_env(sent | {"SUPABASE_URL": standin.url})
                try:
                    assert worker.worker_heartbeat(worker_id) is WorkerState.SPAWNING
                finally:
                    worker.close()
            finally:
                provider.close()
                store.close()


def test_a_local_pod_works_with_its_own_credential_and_loses_it_when_terminated(
    own_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The orchestrator's own process holds its credentials in its environment: a pod inherits none.
    monkeypatch.setenv("DATABASE_URL", own_url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", SERVICE_KEY)
    monkeypatch.setenv("SUPABASE_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
    worker_id = "gpu-20261201_061000-0e0e0e0e"
    settings = fast_settings(own_url, tmp_path)
    from cloud.factory import make_provider

    provider = make_provider(settings)
    store = PostgresStore(own_url, min_size=1, max_size=2)
    pod = None
    try:
        pod = _provision(settings, store, provider, worker_id)
        process = psutil.Process(int(pod.raw["pid"]))
        environ = process.environ()
        _scan(environ, "the local pod's process environment")
        assert psycopg.conninfo.conninfo_to_dict(environ["DATABASE_URL"])["user"].startswith("orchestrator_w_")
        wait_for(
            lambda: (row := store.get_worker(worker_id)) is not None and row.last_heartbeat_at is not None,
            60,
            "the pod's worker to heartbeat with its own credential",
        )
        wait_for(lambda: store.list_system_logs(source_id=worker_id), 30, "the worker's logs in system_logs")
        provider.terminate(pod.id)
        assert store.transition_worker(worker_id, None, WorkerState.TERMINATED, "terminated: test")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(environ["DATABASE_URL"], connect_timeout=5).close()
    finally:
        if pod is not None:
            provider.terminate(pod.id)
        store.close()
