"""The shared polling helpers fail when they should, and as soon as they can."""

from __future__ import annotations

import time

import pytest

from tests.support.polling import stays_true, wait_for


def test_wait_for_returns_the_first_truthy_value_and_times_out_with_the_explanation() -> None:
    answers = iter([0, None, "found"])
    assert wait_for(lambda: next(answers), 2, interval_s=0.01) == "found"
    with pytest.raises(AssertionError, match=r"timed out after 0.1s: never \(last error: None\)\nwhy"):
        wait_for(lambda: False, 0.1, "never", interval_s=0.01, explain=lambda: "why")


def test_stays_true_checks_the_whole_window() -> None:
    calls: list[float] = []

    def holds() -> bool:
        calls.append(time.monotonic())
        return True

    started = time.monotonic()
    stays_true(holds, 0.2, interval_s=0.02)
    assert time.monotonic() - started >= 0.2
    assert len(calls) >= 5 and calls[-1] - started >= 0.2


def test_stays_true_fails_as_soon_as_the_condition_breaks() -> None:
    deadline = time.monotonic() + 0.1
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"nothing spawned: stopped holding after \d+\.\d\ds of 30s\nfleet"):
        stays_true(lambda: time.monotonic() < deadline, 30, "nothing spawned", interval_s=0.01, explain=lambda: "fleet")
    assert time.monotonic() - started < 5


def test_stays_true_fails_when_the_condition_raises() -> None:
    def broken() -> bool:
        raise RuntimeError("store down")

    with pytest.raises(AssertionError, match="store down"):
        stays_true(broken, 5)
