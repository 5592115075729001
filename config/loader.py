"""Builds `OrchestratorSettings` from a YAML file and the environment, with errors a person can act on.

Precedence, later wins: defaults, the YAML file, the standard service variables (`DATABASE_URL`,
`RUNPOD_API_KEY`, `OTEL_*`, ...), then `ORCHESTRATOR_*` variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from config.settings import OrchestratorSettings, standard_environment

__all__ = ["CONFIG_ENV_VAR", "ConfigError", "load_settings", "masked_dump"]

CONFIG_ENV_VAR = "ORCHESTRATOR_CONFIG"

# Field names whose values are secrets: never echoed back in an error message.
_SECRET_FIELDS = {"url", "supabase_service_role_key", "runpod_api_key"}


class ConfigError(Exception):
    """One line per problem, each naming the field path, the bad value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if not isinstance(part, int) or True]
    path = ".".join(loc) or "(top level)"
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    shown = "***" if loc and loc[-1] in _SECRET_FIELDS else repr(value)
    if kind == "greater_than_equal":
        return f"{path}: {shown} is below the minimum {ctx.get('ge')}"
    if kind == "greater_than":
        return f"{path}: {shown} must be greater than {ctx.get('gt')}"
    if kind == "less_than_equal":
        return f"{path}: {shown} is above the maximum {ctx.get('le')}"
    if kind == "less_than":
        return f"{path}: {shown} must be less than {ctx.get('lt')}"
    if kind == "extra_forbidden":
        return f"{path}: unknown field (value {shown}); check the spelling against orchestrator.example.yaml"
    if kind == "missing":
        return f"{path}: required field is missing"
    if kind == "enum":
        return f"{path}: {shown} is not one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return f"{path}: {shown} does not match the pattern {ctx.get('pattern')}"
    if kind == "value_error":
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        return f"{path}: {message}"
    return f"{path}: {shown} is not allowed: {error.get('msg', kind)}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"config file {path}: cannot be read ({exc.strerror or exc})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"config file {path}: not valid YAML{where}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path}: the top level must be a mapping, not {type(data).__name__}"])
    return data


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> OrchestratorSettings:
    """Load the effective settings; raise ConfigError listing every problem."""
    env = dict(os.environ if environ is None else environ)
    if path is None and env.get(CONFIG_ENV_VAR):
        path = env[CONFIG_ENV_VAR]
    values: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    values = _deep_merge(values, standard_environment(env))
    if overrides:
        values = _deep_merge(values, overrides)
    try:
        if environ is None:
            return OrchestratorSettings(**values)
        # An explicit environ replaces os.environ for the ORCHESTRATOR_* variables too.
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(env)
            return OrchestratorSettings(**values)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    except ValidationError as exc:
        raise ConfigError([_describe(err) for err in exc.errors()]) from None


def masked_dump(settings: OrchestratorSettings) -> dict[str, Any]:
    """The settings as plain data with every secret shown as `***` (or null when unset)."""

    def walk(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "***"
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, Path):
            return str(value)
        if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
            return value.value
        return value

    return {k: walk(v) for k, v in settings.model_dump().items()}
