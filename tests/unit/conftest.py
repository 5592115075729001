"""Unit tests are pure: they must never find Ray initialized (STYLE.md item 7)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_ray() -> Iterator[None]:
    def initialized() -> bool:
        ray = sys.modules.get("ray")
        return ray is not None and bool(ray.is_initialized())

    assert not initialized(), "Unit tests should not depend on Ray being initialized"
    yield
    assert not initialized(), "a unit test initialized Ray; move it to tests/integration"
