"""What a WorkerLifecycle's Ray process holds: one per pod, so every module it imports is paid per pod.

A lifecycle supervising its pod (created by the Scaler, as in production) makes its store calls and
reads its pod through the StoreGateway, and its settings arrive pickled from the Scaler: its process
loads no database driver, no RunPod SDK, no pydantic-settings (only where settings are built from
the environment), no OTLP exporter (none is configured here), and never builds the settings'
validators (it only reads them). bench/fleet_scale.py measures what that saves (USS per lifecycle
beside a bare Ray actor's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from config.settings import ProviderSettings
from fleet.models import WorkerState
from store.postgres import PostgresStore
from tests.support.fleet_harness import fast_settings, kill_actor
from tests.support.polling import wait_for
from tests.support.runpod_api import FakeRunPodApi

pytestmark = pytest.mark.ray

WORKER_ID = "gpu-20260101_000000-1ea4f00d"


def _settings_built(lifecycle: Any) -> dict[str, bool]:
    """Whether this process built the validators of the settings it holds (pydantic's own flag)."""
    settings = lifecycle._settings
    return {
        type(settings).__name__: type(settings).__pydantic_complete__,
        type(settings.scaling).__name__: type(settings.scaling).__pydantic_complete__,
    }


def test_a_supervising_lifecycle_loads_no_driver_sdk_settings_loader_or_exporter(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    import ray

    from actors import remote

    store = PostgresStore(database_url, min_size=1, max_size=1)
    with FakeRunPodApi(api_key="lifecycle-key") as api:
        settings = fast_settings(database_url, tmp_path, heartbeat_timeout_s=600.0)
        provider = ProviderSettings(kind="runpod", runpod_api_key=api.api_key, runpod_api_base_url=api.base_url)
        settings = settings.model_copy(update={"provider": provider})
        # The pod as the Scaler leaves it: created, recorded on the row, its worker heartbeating.
        pod_id = api.add_pod(WORKER_ID)
        store.create_worker(WORKER_ID, reason="scale_up: test")
        store.set_worker_pod(WORKER_ID, pod_id, "NVIDIA GeForce RTX 4090")
        store.worker_heartbeat(WORKER_ID)
        store.transition_worker(WORKER_ID, WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: test")
        try:
            lifecycle = remote.get_or_create_lifecycle(WORKER_ID, settings)

            def status() -> dict[str, Any]:
                return cast(dict[str, Any], ray.get(lifecycle.status.remote(), timeout=30))

            wait_for(lambda: status()["steps"] >= 2, 60, "two steps of the lifecycle (row and pod through the gateway)")
            assert status()["state"] == "active"

            assert ray.get(lifecycle.loaded_modules.remote(list(remote.NOT_IN_A_LIFECYCLE)), timeout=30) == []
            built = ray.get(lifecycle.__ray_call__.remote(_settings_built), timeout=30)
            assert built == {"OrchestratorSettings": False, "ScalingSettings": False}, built
        finally:
            kill_actor(f"worker:{WORKER_ID}")
    store.close()
