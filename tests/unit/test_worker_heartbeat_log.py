"""A worker that cannot reach the database logs its failed heartbeats sparingly, and says when they are back."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from fleet.models import WorkerState
from store.base import DatabaseUnavailable
from worker.handlers import HandlerRegistry
from worker.runner import HEARTBEAT_FAILURE_LOG_EVERY_S, WorkerRunner


class _Database:
    """Only the heartbeat the runner calls: down until told otherwise."""

    def __init__(self) -> None:
        self.down = True

    def worker_heartbeat(self, worker_id: str, metadata: dict[str, Any] | None = None) -> WorkerState:
        if self.down:
            raise DatabaseUnavailable("connection refused")
        return WorkerState.ACTIVE


def test_an_outage_logs_one_line_a_minute_and_the_return(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the runner's clock, not its logic
    database = _Database()
    worker = WorkerRunner(database, "w-1", HandlerRegistry(), vram_probe=lambda: None)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="worker")

    beats = int(3 * HEARTBEAT_FAILURE_LOG_EVERY_S / 10) + 1  # a 3-minute outage, one beat every 10 s
    for _ in range(beats):
        worker._heartbeat_once()
        clock[0] += 10.0
    failed = [r for r in caplog.records if r.getMessage().startswith("heartbeat failed")]
    assert len(failed) == 4, [r.getMessage() for r in failed]  # at 0, 60, 120 and 180 s
    assert all(r.levelno == logging.WARNING for r in failed)
    assert "(19 in a row" in failed[-1].getMessage()

    database.down = False
    worker._heartbeat_once()
    worker._heartbeat_once()
    back = [r.getMessage() for r in caplog.records if r.getMessage().startswith("heartbeat back")]
    assert back == [f"heartbeat back after {beats} failed in a row"]
    assert worker.status is WorkerState.ACTIVE

    database.down = True
    caplog.clear()
    worker._heartbeat_once()  # a new outage is logged at once
    assert next(r.getMessage() for r in caplog.records).startswith("heartbeat failed (1 in a row")
