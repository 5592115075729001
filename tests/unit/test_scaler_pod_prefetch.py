"""The Scaler's pod list taken ahead of a timed cycle (`actors.scaler._PodPrefetch`): a cycle gets only
a list begun after the previous cycle ended and recently, waits for one in flight, and never gets one
that had not begun (that one is cancelled, the cycle lists itself)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from actors.scaler import _PodPrefetch
from cloud.base import Pod, PodStatus, Transient

POD = Pod(id="p1", name="gpu-1", status=PodStatus.RUNNING)


class _Provider:
    """A pod list that can be held in flight; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.began = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.error: Exception | None = None

    def list_pods(self) -> tuple[float, list[Pod]]:
        self.calls += 1
        self.began.set()
        assert self.release.wait(10)
        if self.error is not None:
            raise self.error
        return 1234.5, [POD]


@pytest.fixture
def provider() -> _Provider:
    return _Provider()


@pytest.fixture
def prefetch(provider: _Provider) -> Iterator[_PodPrefetch]:
    ahead = _PodPrefetch(provider.list_pods, "test")
    yield ahead
    ahead.close()


def _done(prefetch: _PodPrefetch) -> None:
    deadline = time.monotonic() + 5
    while prefetch._result is None:
        assert time.monotonic() < deadline, "the list never finished"
        time.sleep(0.005)


def test_a_list_due_now_is_taken_with_its_clock(provider: _Provider, prefetch: _PodPrefetch) -> None:
    prefetch.schedule(time.monotonic())
    _done(prefetch)
    listed = prefetch.take(max_age_s=5)
    assert listed is not None and listed.pods == [POD] and listed.pods_at == 1234.5 and listed.error is None
    assert prefetch.take(max_age_s=5) is None, "one list serves one cycle"


def test_a_list_in_flight_is_waited_for(provider: _Provider, prefetch: _PodPrefetch) -> None:
    provider.release.clear()
    prefetch.schedule(time.monotonic())
    assert provider.began.wait(5)
    threading.Timer(0.2, provider.release.set).start()
    t0 = time.monotonic()
    listed = prefetch.take(max_age_s=5)
    assert listed is not None and listed.pods == [POD]
    assert time.monotonic() - t0 >= 0.15


def test_a_list_not_begun_is_cancelled(provider: _Provider, prefetch: _PodPrefetch) -> None:
    prefetch.schedule(time.monotonic() + 0.2)
    assert prefetch.take(max_age_s=5) is None
    time.sleep(0.4)
    assert provider.calls == 0, "a cycle that came early lists itself; the list planned for it never runs"


def test_a_list_begun_before_the_last_cycle_ended_is_not_handed_out(
    provider: _Provider, prefetch: _PodPrefetch
) -> None:
    provider.release.clear()
    prefetch.schedule(time.monotonic())
    assert provider.began.wait(5)
    prefetch.schedule(time.monotonic() + 60)  # another cycle ended meanwhile: the next one is a minute away
    provider.release.set()
    time.sleep(0.2)
    assert prefetch.take(max_age_s=5) is None, "its list began before that cycle's end"


def test_an_old_list_is_not_handed_out(provider: _Provider, prefetch: _PodPrefetch) -> None:
    prefetch.schedule(time.monotonic())
    _done(prefetch)
    time.sleep(0.3)
    assert prefetch.take(max_age_s=0.1) is None


def test_a_failed_list_hands_its_error_over(provider: _Provider, prefetch: _PodPrefetch) -> None:
    provider.error = Transient("list pods: cannot reach RunPod")
    prefetch.schedule(time.monotonic())
    _done(prefetch)
    listed = prefetch.take(max_age_s=5)
    assert listed is not None and listed.pods is None and listed.error is provider.error


def test_closed_it_lists_nothing_until_scheduled_again(provider: _Provider, prefetch: _PodPrefetch) -> None:
    prefetch.schedule(time.monotonic() + 0.2)
    prefetch.close()
    time.sleep(0.4)
    assert provider.calls == 0
    prefetch.schedule(time.monotonic())
    _done(prefetch)
    assert provider.calls == 1
