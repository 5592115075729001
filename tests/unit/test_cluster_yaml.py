"""The `ray up` cluster files pass the checks `ray up` runs before it calls any cloud.

`ray up` does `prepare_config` (merge the provider's defaults, fill node types) and then
`validate_config` (the JSON schema, which forbids unknown keys). There is no `--dry-run`, so this
is the only way to learn of a typo before paying for a node. A copy with a misspelled key must fail.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private import util as autoscaler_util

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_FILES = ["ray_cluster.yaml", "ray_cluster.local.yaml"]


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def _check_as_ray_up_does(config: dict[str, Any]) -> dict[str, Any]:
    prepared = autoscaler_util.prepare_config(copy.deepcopy(config))
    autoscaler_util.validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_file_passes_ray_up_checks(name: str) -> None:
    prepared = _check_as_ray_up_does(_load(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]


def _misspell_top_level(config: dict[str, Any]) -> None:
    config["setup_comands"] = config.pop("setup_commands")


def _misspell_node_type(config: dict[str, Any]) -> None:
    node_type = config["available_node_types"]["worker.cpu"]
    node_type["min_worker"] = node_type.pop("min_workers")


def _misspell_docker(config: dict[str, Any]) -> None:
    config["docker"]["imgae"] = config["docker"].pop("image")


def _misspell_auth(config: dict[str, Any]) -> None:
    config["auth"]["ssh_usr"] = config["auth"].pop("ssh_user")


@pytest.mark.parametrize(
    ("name", "breaker"),
    [
        ("ray_cluster.yaml", _misspell_top_level),
        ("ray_cluster.yaml", _misspell_node_type),
        ("ray_cluster.yaml", _misspell_docker),
        ("ray_cluster.local.yaml", _misspell_top_level),
        ("ray_cluster.local.yaml", _misspell_auth),
    ],
)
def test_a_misspelled_key_fails(name: str, breaker: Any) -> None:
    broken = _load(name)
    breaker(broken)
    # The schema names the unknown key; prepare_config asserts on the docker section itself.
    with pytest.raises((jsonschema.ValidationError, ValueError, AssertionError)) as raised:
        _check_as_ray_up_does(broken)
    if isinstance(raised.value, jsonschema.ValidationError):
        assert "Additional properties are not allowed" in raised.value.message


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_ray_starts_with_dashboard_and_metrics_then_the_orchestrator(name: str) -> None:
    commands = _load(name)["head_start_ray_commands"]
    ray_start = next(i for i, cmd in enumerate(commands) if "ray start --head" in cmd)
    up = next(i for i, cmd in enumerate(commands) if re.search(r"orchestrator up\b", cmd))
    assert ray_start < up, "the orchestrator must start after Ray"
    assert "--include-dashboard=true" in commands[ray_start]
    assert "--metrics-export-port=" in commands[ray_start]


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_the_project_is_mounted_and_installed(name: str) -> None:
    config = _load(name)
    mounts = config["file_mounts"]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        package = pattern.rstrip("*")
        assert mounts.get(f"~/gpu-orchestrator/{package}") == package, f"{package} is not copied to the head"
        assert (ROOT / package).is_dir()
    assert (ROOT / mounts["~/orchestrator.yaml"]).is_file()
    assert any("pip install" in cmd and "~/gpu-orchestrator" in cmd for cmd in config["setup_commands"])


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_no_secret_in_the_file(name: str) -> None:
    text = (ROOT / name).read_text()
    assert not re.search(r"postgres(ql)?://[^\s'\"]*:[^\s'\"]*@", text), "a password in a connection string"
    assert not re.search(r"(?i)(api_key|password|secret_key|service_role_key)\s*[:=]\s*['\"]?\w{8,}", text)
    assert not re.search(r"\brpa_[A-Za-z0-9]{20,}", text), "a RunPod key"
    assert not re.search(r"\bAKIA[0-9A-Z]{16}\b", text), "an AWS access key id"


def test_aws_head_has_worker_types_for_lifecycle_actors() -> None:
    config = _load("ray_cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = [spec for name, spec in types.items() if name != config["head_node_type"]]
    assert "GPU" not in head["resources"], "GPUs are RunPod pods, not Ray nodes"
    assert workers and all("GPU" not in spec["resources"] for spec in workers)
    assert all(spec.get("max_workers", 0) > 0 for spec in workers)
