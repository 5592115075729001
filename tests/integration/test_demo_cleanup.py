"""The demo's cleanup against a real Ray: an actor that died between the listing and the kill (Ctrl-C
while a lifecycle's pod went away) is already gone, not a failure of the cleanup."""

from __future__ import annotations

import logging
import time

import pytest

from orchestrator.demo import runtime


def test_killing_a_named_actor_that_is_already_gone_is_not_a_failure(
    ray_session: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    import ray

    @ray.remote(num_cpus=0)
    class Stub:
        def ping(self) -> str:
            return "pong"

    live = Stub.options(name="demo-cleanup-live", namespace="demo-cleanup").remote()  # type: ignore[attr-defined]
    gone = Stub.options(name="demo-cleanup-gone", namespace="demo-cleanup").remote()  # type: ignore[attr-defined]
    assert ray.get([live.ping.remote(), gone.ping.remote()]) == ["pong", "pong"]
    ray.kill(gone, no_restart=True)
    with pytest.raises(ValueError):  # the race: listed a moment ago, looked up after it died
        for _ in range(100):
            ray.get_actor("demo-cleanup-gone", namespace="demo-cleanup")
            time.sleep(0.1)

    with caplog.at_level(logging.INFO):
        with runtime._best_effort("killing an actor"):
            runtime._kill_named_actor("demo-cleanup-gone", "demo-cleanup")
        with runtime._best_effort("killing an actor"):
            runtime._kill_named_actor("demo-cleanup-live", "demo-cleanup")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "already gone" in caplog.text
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(live.ping.remote(), timeout=30)
