"""The `ray up` cluster files pass the checks `ray up` runs before it calls any cloud.

`ray up` does `prepare_config` (merge the provider's defaults, fill node types) and then
`validate_config` (the JSON schema, which forbids unknown keys). There is no `--dry-run`, so this
is the only way to learn of a typo before paying for a node. A copy with a misspelled key must fail.
"""

from __future__ import annotations

import copy
import json
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


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_dashboard_only_on_loopback(name: str) -> None:
    """Remote access is `ray dashboard FILE` (an SSH tunnel), never an open port."""
    start = " ".join(_load(name)["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_commands_need_no_sourcing_and_no_hard_coded_provider(name: str) -> None:
    """Every `orchestrator` command reads ~/.orchestrator.env itself (config.loader), so the start
    commands run it exactly as `ray exec` does, and the provider is the settings' (a trial switches
    to local pods in the env file)."""
    config = _load(name)
    for cmd in config["head_start_ray_commands"]:
        assert ".orchestrator.env" not in cmd and "PROVIDER__KIND" not in cmd, cmd
    assert config["file_mounts"]["~/orchestrator.yaml"] == "config/cluster.yaml"
    setup = " ".join(config["setup_commands"] + config.get("head_setup_commands", []))
    assert "ORCHESTRATOR_CONFIG" in setup and "chmod 600 ~/.orchestrator.env" in setup


def test_local_host_puts_the_venv_on_the_path_of_every_ray_command() -> None:
    """Ray sources ~/.bashrc before each command it runs over SSH (setup, start, `ray exec`, and the
    `ray stop` of `ray down`): the venv's bin goes there before any bare `orchestrator` or `ray`."""
    config = _load("ray_cluster.local.yaml")
    setup = config["setup_commands"]
    path_line = next(i for i, cmd in enumerate(setup) if "orchestrator-venv/bin:$PATH" in cmd)
    assert ">> ~/.bashrc" in setup[path_line]
    assert not any(re.search(r"(^|[;&|]\s*)(ray|orchestrator)\s", cmd) for cmd in setup[:path_line])
    for cmd in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert "orchestrator-venv/bin/" not in cmd, "bare names: the same PATH as `ray exec` and `ray down`"


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_a_restart_stops_only_this_nodes_own_ray(name: str) -> None:
    """`orchestrator down` before `ray stop` runs only when this node's `ray start` left its address:
    with `auto` and no address file, Ray would attach to any other Ray instance on the host."""
    first = _load(name)["head_start_ray_commands"][0]
    assert "orchestrator down" in first and "ray_current_cluster" in first and "timeout" in first


def test_cluster_settings_default_to_runpod_and_a_database_and_switch_to_local_pods() -> None:
    from config import ConfigError, load_settings

    path = ROOT / "config" / "cluster.yaml"
    env = {"DATABASE_URL": "postgresql://u@db.example/app", "ORCHESTRATOR_CLUSTER": "1"}
    settings = load_settings(path, environ=env)
    assert settings.provider.kind.value == "runpod" and settings.database.backend.value == "postgres"
    trial = load_settings(path, environ={**env, "ORCHESTRATOR_PROVIDER__KIND": "local"})
    assert trial.provider.kind.value == "local"
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings(path, environ={"ORCHESTRATOR_CLUSTER": "1"})


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_the_head_gets_a_ray_auth_token_never_printed(name: str) -> None:
    """On the head only: a worker node generating a token of its own could never join."""
    config = _load(name)
    assert not [cmd for cmd in config["setup_commands"] if "get-auth-token" in cmd]
    (generate,) = [cmd for cmd in config["head_setup_commands"] if "get-auth-token" in cmd]
    assert "--generate" in generate and generate.rstrip().endswith("> /dev/null")


def test_nodes_advertise_lifecycle_slots_for_the_whole_fleet() -> None:
    """The head and the worker node type advertise the resource each WorkerLifecycle asks for, and
    their slots at the autoscaler's ceiling carry the fleet's max_workers and its warm pool (README, "Scaling out")."""
    from config import load_settings

    settings = load_settings(
        ROOT / "config" / "cluster.yaml",
        environ={"DATABASE_URL": "postgresql://u@db.example/app", "ORCHESTRATOR_CLUSTER": "1"},
    )
    resource = settings.ray.lifecycle_resource
    assert resource == "orchestrator_lifecycle"
    config = _check_as_ray_up_does(_load("ray_cluster.yaml"))
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    assert head["resources"].get(resource, 0) >= 1, "the head's slots: a small fleet needs no worker node"
    assert types and all(spec["resources"].get(resource, 0) > 0 for spec in types.values())
    at_most = head["resources"][resource] + sum(s["max_workers"] * s["resources"][resource] for s in types.values())
    # A stopped pod of the warm pool keeps its lifecycle (and a slot) outside max_workers.
    lifecycles = settings.scaling.max_workers + settings.scaling.warm_pool_size
    assert at_most >= lifecycles
    assert config["max_workers"] >= sum(s["max_workers"] for s in types.values())
    # The Scaler's pool, the LogShipper's and the store gateway's: the orchestrator's connections.
    assert 2 * settings.database.pool_max_size + settings.database.gateway_pool_size <= 10
    # The host file (Ray's `local` provider: nodes made by `ray start`): each start advertises slots,
    # the head's alone enough for the fleet (worker_ips may be empty).
    local = _load("ray_cluster.local.yaml")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [cmd for cmd in local[key] if "ray start" in cmd]
        found = re.search(r"--resources='(\{[^']*\})'", start)
        assert found, f"{key}: `ray start` advertises no resources: {start}"
        slots = json.loads(found.group(1)).get(resource, 0)
        assert slots >= lifecycles, f"{key}: {slots} {resource} slots"
