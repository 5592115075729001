"""Bounded retries with exponential backoff and full jitter, for `RateLimited` and `Transient`.

Bounded twice: by attempts and by a time budget, so a provider call never hangs a lifecycle for
longer than `max_seconds` plus one request's own timeout. Every failed attempt is logged at WARNING
and counted in `orchestrator_errors{component="cloud"}`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cloud.base import ProviderError
from telemetry import metrics

__all__ = ["RetryPolicy", "call_with_retries"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 5
    max_seconds: float = 60.0
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2**attempt)]."""
        return rng.uniform(0, min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1))))


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    logger: logging.Logger,
    before_retry: Callable[[], T | None] | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn`, retrying retryable `ProviderError`s within the policy; re-raise the last one.

    `before_retry` runs before each retry; a non-None answer ends the call with that value. The
    create path uses it to look the pod up by name, since a create that timed out may have worked.
    """
    rng = rng or random.Random()
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except ProviderError as exc:
            if not exc.retryable:
                raise
            metrics.record_error("cloud", f"retryable_{type(exc).__name__}")
            elapsed = clock() - started
            delay = policy.delay(attempt, rng)
            if attempt >= policy.max_attempts or elapsed + delay > policy.max_seconds:
                logger.warning(
                    "%s: giving up after %d attempts in %.1fs: %s: %s",
                    what,
                    attempt,
                    elapsed,
                    type(exc).__name__,
                    exc,
                )
                raise
            logger.warning(
                "%s: attempt %d failed (%s: %s); retrying in %.2fs",
                what,
                attempt,
                type(exc).__name__,
                exc,
                delay,
            )
            sleep(delay)
            if before_retry is not None:
                try:
                    found = before_retry()
                except ProviderError as check_exc:
                    if not check_exc.retryable:
                        raise
                    # The check itself hit a transient error: just try again.
                    metrics.record_error("cloud", "before_retry_check")
                    logger.warning(
                        "%s: the check before retrying failed (%s: %s)", what, type(check_exc).__name__, check_exc
                    )
                    found = None
                if found is not None:
                    return found
