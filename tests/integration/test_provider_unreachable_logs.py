"""With the provider unreachable, each Scaler cycle says so in one line naming the cause: no
traceback for an expected failure (the health and the status show it too)."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from actors.scaler import Scaler
from config.settings import OrchestratorSettings, ProviderKind
from orchestrator import control
from store.base import NewTask
from store.postgres import PostgresStore
from tests.conftest import free_port
from tests.integration.test_scaler_provider_faults import InProcessLifecycles
from tests.support.fleet_harness import fast_settings, unique_name
from tests.support.polling import wait_for


def _unreachable_runpod(database_url: str, tmp_path: Path) -> OrchestratorSettings:
    settings = fast_settings(database_url, tmp_path, max_workers=2)
    provider = settings.provider.model_copy(
        update={
            "kind": ProviderKind.RUNPOD,
            "runpod_api_key": SecretStr("rpa_TEST_unreachable_0123456789"),
            "runpod_api_base_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "request_max_attempts": 2,
            "request_max_seconds": 0.5,
        }
    )
    return settings.model_copy(update={"provider": provider})


def test_unreachable_provider_one_line_per_cycle_no_traceback(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _unreachable_runpod(database_url, tmp_path)
    store = PostgresStore(database_url, min_size=1, max_size=2)
    store.insert_tasks([NewTask(task_type="travel_segment", user_id="u1", params={})])
    lifecycles = InProcessLifecycles(settings)
    caplog.set_level(logging.INFO)
    scaler = Scaler(settings, holder="test/unreachable", name=unique_name("scaler-unreach"), lifecycles=lifecycles)
    try:
        wait_for(lambda: scaler.health()["consecutive_failures"].get("pods", 0) >= 4, 30, "four failing cycles")
        # The health and the status say it too.
        health = scaler.health()
        assert health["verdict"] == "failing" and health["consecutive_failures"]["pods"] >= 4, health
        status = "\n".join(control.scaler_lines(scaler.status(), time.time()))
        assert "pods failed" in status and "cannot reach RunPod" in status, status
    finally:
        scaler.stop()
        lifecycles.stop_all()
        store.close()
    records: list[Any] = caplog.records
    with_traceback = [f"{r.name}: {r.getMessage()[:200]}" for r in records if r.exc_info]
    assert not with_traceback, with_traceback
    pods_lines = [r for r in records if r.name == "actors.scaler" and r.getMessage().startswith("scaler phase pods")]
    cycles = [re.search(r"\(cycle (\d+),", r.getMessage()) for r in pods_lines]
    numbers = [int(m.group(1)) for m in cycles if m]
    assert len(numbers) == len(pods_lines) >= 4 and len(set(numbers)) == len(numbers), "one line per cycle"
    assert all(r.levelno == logging.WARNING and "cannot reach RunPod" in r.getMessage() for r in pods_lines)
    assert "scaler phase pods failed (cycle" in pods_lines[0].getMessage()
