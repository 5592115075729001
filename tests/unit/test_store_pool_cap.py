"""The lifecycles share the StoreGateway's small pool: 100 supervised pods must not hold 100 pools."""

from __future__ import annotations

from typing import Any

import pytest

from actors import lifecycle, store_gateway
from config.settings import OrchestratorSettings
from store import factory


class _Recorder:
    opened: list[dict[str, Any]] = []

    def __init__(self, conninfo: str, **kwargs: Any) -> None:
        type(self).opened.append(kwargs)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[_Recorder]:
    import store.postgres

    _Recorder.opened = []
    monkeypatch.setattr(store.postgres, "PostgresStore", _Recorder)
    return _Recorder


def _settings(min_size: int, max_size: int) -> OrchestratorSettings:
    return OrchestratorSettings(
        database={
            "backend": "postgres",
            "url": "postgresql://u@127.0.0.1:1/db",
            "pool_min_size": min_size,
            "pool_max_size": max_size,
        }
    )


def test_open_store_uses_the_configured_pool_without_a_cap(recorder: type[_Recorder]) -> None:
    factory.open_store(_settings(1, 8))
    assert (recorder.opened[-1]["min_size"], recorder.opened[-1]["max_size"]) == (1, 8)


@pytest.mark.parametrize(("configured", "capped"), [((1, 8), (1, 2)), ((4, 8), (2, 2)), ((1, 1), (1, 1))])
def test_open_store_caps_the_pool(
    recorder: type[_Recorder], configured: tuple[int, int], capped: tuple[int, int]
) -> None:
    factory.open_store(_settings(*configured), pool_max_size=2)
    assert (recorder.opened[-1]["min_size"], recorder.opened[-1]["max_size"]) == capped


def test_a_plain_lifecycle_store_is_capped(recorder: type[_Recorder]) -> None:
    lifecycle._default_store(_settings(1, 8))
    assert recorder.opened[-1]["max_size"] == lifecycle.LIFECYCLE_POOL_MAX_SIZE == 2


def test_the_gateway_store_is_capped_at_the_gateway_pool_size(recorder: type[_Recorder]) -> None:
    settings = _settings(1, 8)
    gateway = store_gateway.StoreGateway(start=False)
    key = store_gateway.gateway_key(settings)
    gateway.open(key, settings)
    gateway._entry(key).store()
    assert recorder.opened[-1]["max_size"] == settings.database.gateway_pool_size == 3
