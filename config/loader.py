"""Builds `OrchestratorSettings` from a YAML file and the environment, with errors a person can act on.

Precedence, later wins: defaults, the YAML file, the standard service variables (`DATABASE_URL`,
`RUNPOD_API_KEY`, `OTEL_*`, ...), then `ORCHESTRATOR_*` variables.

The variables come from the process environment and from an env file, read here so that every
command finds its configuration the same way on a cluster node (where `ray exec` runs it with a bare
environment) as on a laptop: `ORCHESTRATOR_ENV_FILE` (or `orchestrator --env-file`) names it, else
`~/.orchestrator.env` is read when it exists. Lines are `KEY=value` or `export KEY=value` with shell
quoting (what `shlex.quote` writes), `#` comments and blank lines. A variable set in the process
environment wins over the file. Values are never echoed: a bad line is named by its number.

On a cluster node the orchestrator never starts an embedded database: a node is one when
`ORCHESTRATOR_CLUSTER` is true (in the environment or the env file), or when `ray up` set it up
(`~/ray_bootstrap_config.yaml`, which `ray up` writes on the head); `ORCHESTRATOR_CLUSTER=0` says it
is not. There, settings without a database (backend `embedded`) are refused with the reason.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from config.settings import OrchestratorSettings, standard_environment

__all__ = [
    "CLUSTER_ENV_VAR",
    "CONFIG_ENV_VAR",
    "DEFAULT_ENV_FILE",
    "ENV_FILE_VAR",
    "ConfigError",
    "cluster_reason",
    "env_file_path",
    "load_settings",
    "masked_dump",
    "read_env_file",
]

CONFIG_ENV_VAR = "ORCHESTRATOR_CONFIG"
ENV_FILE_VAR = "ORCHESTRATOR_ENV_FILE"
CLUSTER_ENV_VAR = "ORCHESTRATOR_CLUSTER"
DEFAULT_ENV_FILE = ".orchestrator.env"  # in the home directory
# `ray up` copies the cluster config to the head as ~/ray_bootstrap_config.yaml (its head start
# commands pass it to `ray start --autoscaling-config`): the mark of a node `ray up` set up.
RAY_UP_HEAD_MARKER = "ray_bootstrap_config.yaml"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

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
    env_file: str | Path | None = None,
) -> OrchestratorSettings:
    """Load the effective settings; raise ConfigError listing every problem.

    `environ` None reads the process environment; the env file (see the module docstring) fills in
    what it does not set. `env_file` names the file instead of ORCHESTRATOR_ENV_FILE / the default.
    """
    process = dict(os.environ if environ is None else environ)
    file = env_file_path(process, env_file)
    from_file = read_env_file(file) if file is not None else {}
    env = {**from_file, **process}
    if path is None and env.get(CONFIG_ENV_VAR):
        path = env[CONFIG_ENV_VAR]
    values: dict[str, Any] = _read_yaml(_expand_home(Path(path), env)) if path is not None else {}
    values = _deep_merge(values, standard_environment(env))
    if overrides:
        values = _deep_merge(values, overrides)
    settings = _build(values, env, explicit=environ is not None or bool(from_file))
    reason = cluster_reason(env)
    if reason is not None and settings.database.backend == "embedded":
        where = str(file) if file is not None else f"~/{DEFAULT_ENV_FILE}"
        raise ConfigError(
            [
                f"database.backend: this is a cluster node ({reason}), where the orchestrator never starts an "
                "embedded database that nothing else can reach; set ORCHESTRATOR_DATABASE__BACKEND=postgres and "
                "DATABASE_URL (or =supabase with SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY) in the env file "
                f"{where}, readable by this user only (chmod 600)"
            ]
        )
    return settings


def _build(values: dict[str, Any], env: dict[str, str], *, explicit: bool) -> OrchestratorSettings:
    try:
        if not explicit:
            return OrchestratorSettings(**values)
        # An explicit environ (or one completed by the env file) replaces os.environ for the
        # ORCHESTRATOR_* variables too.
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


def _expand_home(path: Path, environ: Mapping[str, str]) -> Path:
    """`~/x` against the HOME of `environ` (an env file written for a node names paths in its home)."""
    home = environ.get("HOME")
    if home and path.parts and path.parts[0] == "~":
        return Path(home).joinpath(*path.parts[1:])
    return path.expanduser()


def env_file_path(environ: Mapping[str, str], given: str | Path | None = None) -> Path | None:
    """The env file to read: `given`, else ORCHESTRATOR_ENV_FILE (both must exist), else
    ~/.orchestrator.env when it exists (home from HOME of `environ`), else None."""
    named = given if given is not None else environ.get(ENV_FILE_VAR) or None
    if named is not None:
        path = _expand_home(Path(named), environ)
        if not path.exists() or path.is_dir():  # /dev/null is allowed: no env file at all
            raise ConfigError([f"env file {path} (--env-file or {ENV_FILE_VAR}): no such file"])
        return path
    home = environ.get("HOME")
    if not home:
        return None
    default = Path(home) / DEFAULT_ENV_FILE
    return default if default.is_file() else None


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file. Problems name the file and line, never a value."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"env file {path}: cannot be read ({exc.strerror or exc})"]) from None
    values: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line.removeprefix("export ").lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            problems.append(f"env file {path}, line {number}: not KEY=value (or export KEY=value)")
            continue
        try:
            words = shlex.split(rest, comments=True)
        except ValueError:
            problems.append(f"env file {path}, line {number}: the value of {key} has unbalanced quotes")
            continue
        if len(words) > 1:
            problems.append(f"env file {path}, line {number}: the value of {key} has unquoted spaces; quote it")
            continue
        values[key] = words[0] if words else ""
    if problems:
        raise ConfigError(problems)
    return values


def cluster_reason(environ: Mapping[str, str]) -> str | None:
    """Why this process runs on a cluster node (`ORCHESTRATOR_CLUSTER`, or the head `ray up` set up),
    or None when it does not."""
    said = environ.get(CLUSTER_ENV_VAR, "").strip().lower()
    if said in _TRUE:
        return f"{CLUSTER_ENV_VAR}={environ[CLUSTER_ENV_VAR].strip()}"
    if said in _FALSE:
        return None
    home = environ.get("HOME")
    if home and (Path(home) / RAY_UP_HEAD_MARKER).is_file():
        return f"`ray up` set it up: ~/{RAY_UP_HEAD_MARKER} exists; {CLUSTER_ENV_VAR}=0 if it is not a cluster"
    return None


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
