"""Typed configuration: pydantic models, YAML and environment loading (pydantic-settings when built)."""

from config.loader import CONFIG_ENV_VAR, ConfigError, load_settings, masked_dump
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
