"""Polling, the way integration tests wait for real parts instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout_s: float = 20.0,
    message: str = "condition",
    interval_s: float = 0.2,
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy; fail with `message` (and `explain()`) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # a transient error while polling: keep polling
            last_error = exc
        if time.monotonic() >= deadline:
            details = ""
            if explain is not None:
                try:
                    details = "\n" + explain()
                except Exception as exc:
                    details = f"\n(explain failed: {exc!r})"
            raise AssertionError(f"timed out after {timeout_s}s: {message} (last error: {last_error!r}){details}")
        time.sleep(interval_s)
