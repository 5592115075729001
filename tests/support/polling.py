"""Polling, the way integration tests wait for real parts instead of sleeping.

`wait_for`: until something happens. `stays_true`: something must keep holding for a window.
"""

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


def stays_true(
    condition: Callable[[], object],
    for_s: float,
    message: str = "condition",
    interval_s: float = 0.05,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll `condition` for `for_s` seconds; fail as soon as it is falsy or raises.

    The negative check ("nothing more was spawned", "the pod keeps running"): a sleep followed by
    one assert would see the bad thing only if it were still visible at the end of the window.
    """
    start = time.monotonic()
    while True:
        checked_at = time.monotonic()
        try:
            ok = condition()
        except Exception as exc:
            raise AssertionError(f"{message}: raised {exc!r} after {checked_at - start:.2f}s of {for_s}s") from exc
        if not ok:
            details = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"{message}: stopped holding after {checked_at - start:.2f}s of {for_s}s{details}")
        if checked_at - start >= for_s:
            return
        time.sleep(min(interval_s, max(0.0, start + for_s - time.monotonic())))
