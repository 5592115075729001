"""fleet.supervision.lifecycles_to_ensure: which live workers get their WorkerLifecycle this cycle."""

from __future__ import annotations

from fleet import supervision


def test_every_live_worker_gets_its_lifecycle_in_a_stable_order() -> None:
    assert supervision.lifecycles_to_ensure({"gpu-b", "gpu-a"}, set()) == ["gpu-a", "gpu-b"]


def test_not_while_the_scaler_is_still_creating_its_pod() -> None:
    # The Scaler starts that lifecycle itself once its create call returned: never two creates at once.
    assert supervision.lifecycles_to_ensure(["gpu-a", "gpu-b"], ["gpu-b"]) == ["gpu-a"]


def test_a_create_in_flight_for_a_row_no_longer_live_changes_nothing() -> None:
    assert supervision.lifecycles_to_ensure(["gpu-a"], ["gpu-z"]) == ["gpu-a"]
