"""The `ORCHESTRATOR_*` variables over the values `OrchestratorSettings` is built from.

Kept apart from config/settings.py so that pydantic-settings is imported where settings are built
(the CLI, the Scaler's driver, tests), never where they are only unpickled (a WorkerLifecycle).
The variables are read by pydantic-settings' own EnvSettingsSource, so the names, nesting, JSON
values and case rules are the ones a `BaseSettings` with sources (environment, init) had: the
environment wins, merged into nested mappings.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_settings import BaseSettings, EnvSettingsSource


@functools.cache
def _fields_of(model: type[BaseModel]) -> type[BaseSettings]:
    """`model`'s fields as a BaseSettings class: what EnvSettingsSource maps variables onto (never built)."""
    return type(model.__name__, (model, BaseSettings), {"model_config": ConfigDict(defer_build=True)})


def _merged(values: Mapping[str, Any], environment: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with `environment` over them; mappings on both sides are merged key by key."""
    out = dict(values)
    for key, value in environment.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def with_environment(model: type[BaseModel], values: Mapping[str, Any], prefix: str, delimiter: str) -> dict[str, Any]:
    """The values `model` is validated from: `values`, overridden by the variables named `<prefix><FIELD>`
    (`<prefix><SECTION><delimiter><FIELD>` for a nested one)."""
    source = EnvSettingsSource(_fields_of(model), env_prefix=prefix, env_nested_delimiter=delimiter)
    return _merged(values, source())
