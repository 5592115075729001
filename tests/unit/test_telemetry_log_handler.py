"""The log handler never blocks or raises, carries context, and counts every record it cannot ship."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from config.settings import OrchestratorSettings
from telemetry import tracing
from telemetry.log_handler import ShippingLogHandler


def make(tmp_path: Path, **shipping: object) -> ShippingLogHandler:
    settings = OrchestratorSettings(
        provider={"runpod_api_key": "rpa_UNITTESTKEY000000001"},
        log_shipping={"fallback_file": tmp_path / "fallback.jsonl", **shipping},
    )
    from telemetry.redact import register_secrets

    register_secrets(settings)
    return ShippingLogHandler(settings, source_type="orchestrator", source_id="unit", shipper_lookup=lambda: None)


def test_unreachable_shipper_goes_to_fallback_with_context(tmp_path: Path) -> None:
    handler = make(tmp_path)
    logger = logging.getLogger("unit.handler")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # pytest's capture handler raises on the bad format below; ours must not
    try:
        with tracing.decision_span(12):
            trace_id = tracing.current_trace_id()
            logger.info(
                "spawned %s with rpa_UNITTESTKEY000000001",
                "gpu-1",
                extra={"cycle_number": 12, "worker_id": "gpu-1", "task_id": "t9", "gpu": "4090"},
            )
        logger.warning("bad format %d", "not a number")  # never raises into the caller
        assert handler.flush(timeout=5)
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = [json.loads(x) for x in (tmp_path / "fallback.jsonl").read_text().splitlines()]
    first = lines[0]
    assert first["message"] == "spawned gpu-1 with ***"
    assert (first["cycle_number"], first["worker_id"], first["task_id"]) == (12, "gpu-1", "t9")
    assert first["trace_id"] == trace_id and first["attributes"] == {"gpu": "4090"}
    assert first["fallback_reason"] == "LogShipper not reachable"
    assert handler.stats()["fallback"] == 2 and handler.stats()["handler_errors"] == 0


def test_full_buffer_drops_debug_first_and_counts(tmp_path: Path) -> None:
    handler = make(tmp_path, max_buffer_records=100)
    handler._stop.set()  # freeze the sender so the buffer fills
    handler._sender.join(timeout=5)
    logger = logging.getLogger("unit.full")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    handler.setLevel(logging.DEBUG)
    try:
        for i in range(100):
            logger.info("info %d", i)
        for i in range(10):
            logger.debug("debug %d", i)
        for i in range(5):
            logger.error("error %d", i)
    finally:
        logger.removeHandler(handler)
    stats = handler.stats()
    assert stats["dropped"] == {"buffer_full:DEBUG": 10, "buffer_full:INFO": 5}
    assert stats["buffered"] == 100 and stats["emitted"] == 115


def test_handle_applies_filters_and_emits_under_the_handler_lock(tmp_path: Path) -> None:
    handler = make(tmp_path)
    handler._stop.set()  # keep records in the buffer
    handler._sender.join(timeout=5)
    logger = logging.getLogger("unit.handle")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    seen_locked = []
    emit = handler.emit

    def checking_emit(record: logging.LogRecord) -> None:
        seen_locked.append(handler.lock._is_owned())  # type: ignore[union-attr]
        emit(record)

    handler.emit = checking_emit  # type: ignore[method-assign]
    handler.addFilter(lambda record: "secret-skip" not in record.getMessage())
    try:
        logger.info("kept %d", 1)
        logger.info("secret-skip %d", 2)
        logger.info("kept with extra", extra={"gpu": "4090"})
    finally:
        logger.removeHandler(handler)
    items = list(handler._buffer)
    assert [i["message"] for i in items] == ["kept 1", "kept with extra"]
    assert "attributes" not in items[0] and items[1]["attributes"] == {"gpu": "4090"}
    assert seen_locked == [True, True] and handler.stats()["emitted"] == 2


def test_an_idle_sender_sleeps_and_a_record_still_goes_at_once(tmp_path: Path) -> None:
    import time

    handler = make(tmp_path, flush_interval_s=0.05)
    logger = logging.getLogger("unit.handler.idle")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        time.sleep(0.3)  # the sender's first rounds find nothing
        before = handler.stats()["sender_rounds"]
        time.sleep(1.5)
        rounds = handler.stats()["sender_rounds"]
        assert rounds - before <= 3  # polling every 50 ms would be ~30
        while handler.stats()["sender_rounds"] == rounds:  # just after a round: the next is ~1 s away
            time.sleep(0.005)
        logger.info("after a quiet spell")
        deadline = time.monotonic() + 0.5  # well before the idle wait would end on its own
        while handler.stats()["fallback"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert handler.stats()["fallback"] == 1  # no shipper: the record reached the fallback
    finally:
        logger.removeHandler(handler)
        handler.close()
