"""The LogShipper verdict is a pure function of its health figures, the time and the settings."""

from __future__ import annotations

from typing import Any

import pytest

from config.settings import OrchestratorSettings
from telemetry.shipper_health import assess

NOW = 10_000.0
SETTINGS = OrchestratorSettings(log_shipping={"stale_flush_alarm_s": 60})


def health(**over: Any) -> dict[str, Any]:
    base = {
        "started_at": NOW - 3600,
        "last_flush_at": NOW - 1,
        "pending_since": None,
        "flushing_since": None,
        "records_pending": 0,
        "consecutive_failures": 0,
        "flusher_alive": True,
        "shipped": 100,
        "dropped": {},
        "dropped_total": 0,
    }
    return {**base, **over}


@pytest.mark.parametrize(
    ("figures", "ok", "restart", "words"),
    [
        (None, False, True, "did not answer"),
        (health(), True, False, "ok"),
        (health(flusher_alive=False), False, True, "flusher thread"),
        (health(flushing_since=NOW - 61, records_pending=5), False, True, "hung"),
        (health(flushing_since=NOW - 30, records_pending=5), True, False, "ok"),
        # Waiting records, no flush for too long, no error: stuck silently -> restart.
        (health(records_pending=9, last_flush_at=NOW - 300, pending_since=NOW - 90), False, True, "no error"),
        # Records began waiting recently after a long quiet period: fine.
        (health(records_pending=9, last_flush_at=NOW - 3000, pending_since=NOW - 5), True, False, "ok"),
        # The database fails: not ok, but a restart would not help.
        (
            health(records_pending=9, last_flush_at=NOW - 300, pending_since=NOW - 300, consecutive_failures=12),
            False,
            False,
            "database fails",
        ),
        # A fresh restart replaying its spool gets the full grace period.
        (health(records_pending=9, last_flush_at=None, started_at=NOW - 10, pending_since=NOW - 10), True, False, "ok"),
        (health(dropped={"spool_full:DEBUG": 4}, dropped_total=4), True, False, "dropped"),
    ],
)
def test_assess(figures: dict[str, Any] | None, ok: bool, restart: bool, words: str) -> None:
    verdict = assess(figures, NOW, SETTINGS)
    assert (verdict.ok, verdict.restart) == (ok, restart), verdict.reason
    assert words in verdict.reason
