"""Typed configuration: pydantic models, YAML and environment loading (pydantic-settings when built)."""

from typing import TYPE_CHECKING, Any

from config.settings import (
    DatabaseBackend,
    DatabaseSettings,
    LogShippingSettings,
    OrchestratorSettings,
    OrphanPodPolicy,
    PodTemplate,
    ProviderKind,
    ProviderSettings,
    RaySettings,
    ScalingSettings,
    TelemetrySettings,
    WorkerSettings,
)

__all__ = [
    "CONFIG_ENV_VAR",
    "ConfigError",
    "DatabaseBackend",
    "DatabaseSettings",
    "LogShippingSettings",
    "OrchestratorSettings",
    "OrphanPodPolicy",
    "PodTemplate",
    "ProviderKind",
    "ProviderSettings",
    "RaySettings",
    "ScalingSettings",
    "TelemetrySettings",
    "WorkerSettings",
    "load_settings",
    "masked_dump",
]

if TYPE_CHECKING:
    from config.loader import CONFIG_ENV_VAR, ConfigError, load_settings, masked_dump

# The loader (YAML, env files) is imported on first use: a process that only receives settings (a
# WorkerLifecycle) imports `config.settings`, and with it this package, but never loads settings.
_LOADER_NAMES = frozenset({"CONFIG_ENV_VAR", "ConfigError", "load_settings", "masked_dump"})


def __getattr__(name: str) -> Any:
    if name in _LOADER_NAMES:
        from config import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
