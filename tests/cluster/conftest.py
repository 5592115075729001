"""The `ray up` end-to-end tests: marked `cluster` (`pytest -m "not cluster"` leaves them out;
`make test-cluster` runs only them)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: `ray up` of a cluster file over SSH, end to end (minutes; root)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)
