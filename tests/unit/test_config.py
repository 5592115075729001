"""Config loading: precedence, standard variables, secrets, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from config import ConfigError, load_settings, masked_dump
from config.settings import DatabaseBackend
from orchestrator.cli import app

SECRET = "sk-live-VERY-SECRET-123"


def test_defaults_select_the_embedded_database() -> None:
    settings = load_settings(environ={})
    assert settings.database.backend is DatabaseBackend.EMBEDDED
    assert settings.scaling.min_workers <= settings.scaling.max_workers


def test_yaml_then_standard_variables_then_prefixed_variables(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("scaling:\n  max_workers: 4\n  min_workers: 1\ntelemetry:\n  service_name: from-yaml\n")
    settings = load_settings(path, environ={"OTEL_SERVICE_NAME": "from-otel"})
    assert settings.scaling.max_workers == 4
    assert settings.telemetry.service_name == "from-otel"
    settings = load_settings(
        path,
        environ={
            "OTEL_SERVICE_NAME": "from-otel",
            "ORCHESTRATOR_TELEMETRY__SERVICE_NAME": "from-prefix",
            "ORCHESTRATOR_SCALING__MAX_WORKERS": "8",
        },
    )
    assert settings.telemetry.service_name == "from-prefix"
    assert settings.scaling.max_workers == 8
    assert settings.scaling.min_workers == 1


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("scaling:\n  max_workers: 3\n")
    assert load_settings(environ={"ORCHESTRATOR_CONFIG": str(path)}).scaling.max_workers == 3


def test_standard_service_variables_are_honoured() -> None:
    settings = load_settings(
        environ={
            "DATABASE_URL": "postgresql://u:pw@db.example:5432/app",
            "ORCHESTRATOR_DATABASE__BACKEND": "postgres",
            "RUNPOD_API_KEY": SECRET,
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
        }
    )
    assert settings.database.backend is DatabaseBackend.POSTGRES
    assert settings.database.url is not None and "db.example" in settings.database.url.get_secret_value()
    assert settings.provider.runpod_api_key is not None
    assert settings.provider.runpod_api_key.get_secret_value() == SECRET
    assert settings.telemetry.otlp_endpoint == "http://jaeger:4318"


def test_secrets_never_appear_in_repr_or_dump() -> None:
    settings = load_settings(
        environ={
            "RUNPOD_API_KEY": SECRET,
            "SUPABASE_SERVICE_ROLE_KEY": SECRET,
            "SUPABASE_URL": "https://x.supabase.co",
            "ORCHESTRATOR_DATABASE__BACKEND": "supabase",
        }
    )
    assert SECRET not in repr(settings)
    assert SECRET not in str(masked_dump(settings))
    assert masked_dump(settings)["provider"]["runpod_api_key"] == "***"


BAD_INPUTS: list[tuple[dict[str, str], str, str]] = [
    ({"ORCHESTRATOR_SCALING__MAX_WORKERS": "-1"}, "scaling.max_workers", "below the minimum 0"),
    ({"ORCHESTRATOR_SCALING__MIN_WORKERS": "5", "ORCHESTRATOR_SCALING__MAX_WORKERS": "2"}, "scaling", "min_workers"),
    (
        {"ORCHESTRATOR_SCALING__HEARTBEAT_TIMEOUT_S": "5", "ORCHESTRATOR_SCALING__HEARTBEAT_INTERVAL_S": "10"},
        "scaling",
        "heartbeat_timeout_s",
    ),
    ({"ORCHESTRATOR_SCALING__FAILURE_RATE_THRESHOLD": "1.5"}, "scaling.failure_rate_threshold", "maximum 1"),
    ({"ORCHESTRATOR_SCALING__CYCLE_INTERVAL_S": "0"}, "scaling.cycle_interval_s", "greater than 0"),
    ({"ORCHESTRATOR_SCALING__TASKS_PER_WORKER": "many"}, "scaling.tasks_per_worker", "'many'"),
    ({"ORCHESTRATOR_PROVIDER__KIND": "aws"}, "provider.kind", "'aws'"),
    ({"ORCHESTRATOR_PROVIDER__NAME_PREFIX": "GPU_"}, "provider.name_prefix", "pattern"),
    ({"ORCHESTRATOR_PROVIDER__TEMPLATE__GPU_COUNT": "0"}, "provider.template.gpu_count", "below the minimum 1"),
    ({"ORCHESTRATOR_PROVIDER__TEMPLATE__CLOUD_TYPE": "CHEAP"}, "provider.template.cloud_type", "'CHEAP'"),
    ({"ORCHESTRATOR_TELEMETRY__OTLP_PROTOCOL": "carrier-pigeon"}, "telemetry.otlp_protocol", "carrier-pigeon"),
    ({"ORCHESTRATOR_LOG_SHIPPING__BATCH_SIZE": "0"}, "log_shipping.batch_size", "below the minimum 1"),
    ({"ORCHESTRATOR_LOG_SHIPPING__LEVEL": "LOUD"}, "log_shipping.level", "'LOUD'"),
    (
        {"ORCHESTRATOR_DATABASE__POOL_MIN_SIZE": "9", "ORCHESTRATOR_DATABASE__POOL_MAX_SIZE": "2"},
        "database",
        "pool_min_size",
    ),
    ({"ORCHESTRATOR_LEASE_TTL_S": "5"}, "(top level)", "lease_ttl_s"),
    (
        {"ORCHESTRATOR_SCALING__WARM_POOL_KEEP_S": "86400", "ORCHESTRATOR_DATABASE__WORKER_CREDENTIAL_TTL_S": "3600"},
        "(top level)",
        "scaling.warm_pool_keep_s (86400) must be shorter than database.worker_credential_ttl_s (3600)",
    ),
]


@pytest.mark.parametrize(("environ", "path", "fragment"), BAD_INPUTS, ids=[b[1] + ":" + b[2] for b in BAD_INPUTS])
def test_bad_input_names_the_field_and_value(environ: dict[str, str], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert fragment in message, message


def test_misspelled_yaml_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("scaling:\n  max_wrokers: 4\n")
    with pytest.raises(ConfigError, match=r"scaling\.max_wrokers: unknown field"):
        load_settings(path, environ={})


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(tmp_path / "missing.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("scaling: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_settings(broken, environ={})
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(listy, environ={})


def test_secret_in_a_bad_value_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f'provider:\n  runpod_api_key: ["{SECRET}"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "provider.runpod_api_key" in str(info.value)
    assert SECRET not in str(info.value)


def test_config_check_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.setenv("RUNPOD_API_KEY", SECRET)
    ok = runner.invoke(app, ["config", "check"])
    assert ok.exit_code == 0, ok.output
    assert "max_workers" in ok.output
    assert SECRET not in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("scaling:\n  max_workers: -1\n")
    result = runner.invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == 2
    assert "scaling.max_workers: -1 is below the minimum 0" in result.output


# ---- the database backend is said, never guessed


def test_the_backend_is_a_field_and_a_database_url_alone_does_not_choose_it() -> None:
    url = "postgresql://u:pw@db.example:5432/app"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DATABASE_URL": url})
    message = str(info.value)
    assert message.startswith("database: ") and "ORCHESTRATOR_DATABASE__BACKEND" in message, message
    assert "pw" not in message
    settings = load_settings(environ={"DATABASE_URL": url, "ORCHESTRATOR_DATABASE__BACKEND": "postgres"})
    assert settings.database.backend is DatabaseBackend.POSTGRES
    # The reigh adoption: the orchestrator's own Postgres, and the Supabase URL its pods are handed.
    both = load_settings(
        environ={
            "DATABASE_URL": url,
            "SUPABASE_URL": "https://x.supabase.co",
            "SUPABASE_SERVICE_ROLE_KEY": SECRET,
            "ORCHESTRATOR_DATABASE__BACKEND": "postgres",
        }
    )
    assert both.database.backend is DatabaseBackend.POSTGRES
    with pytest.raises(ConfigError, match=r"backend is supabase but database\.url"):
        load_settings(
            environ={
                "DATABASE_URL": url,
                "SUPABASE_URL": "https://x.supabase.co",
                "SUPABASE_SERVICE_ROLE_KEY": SECRET,
                "ORCHESTRATOR_DATABASE__BACKEND": "supabase",
            }
        )


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"ORCHESTRATOR_DATABASE__BACKEND": "postgres"}, "backend is postgres but database.url is not set"),
        (
            {"ORCHESTRATOR_DATABASE__BACKEND": "supabase", "SUPABASE_URL": "https://x.supabase.co"},
            "supabase_service_role_key (SUPABASE_SERVICE_ROLE_KEY)",
        ),
        ({"SUPABASE_URL": "https://x.supabase.co"}, "database.backend is embedded (the default)"),
        ({"ORCHESTRATOR_DATABASE__BACKEND": "mysql"}, "database.backend: 'mysql'"),
    ],
)
def test_a_backend_without_its_database_or_a_database_it_would_not_use_is_refused(
    environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert fragment in str(info.value), str(info.value)
    assert SECRET not in str(info.value)


def test_runpod_with_the_embedded_database_is_refused_at_load_and_by_config_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"ORCHESTRATOR_PROVIDER__KIND": "runpod", "RUNPOD_API_KEY": SECRET})
    message = str(info.value)
    assert "provider.kind is runpod but database.backend is embedded" in message, message
    assert "a RunPod pod cannot reach" in message and SECRET not in message
    # With a database pods can reach it loads.
    ok = load_settings(
        environ={
            "ORCHESTRATOR_PROVIDER__KIND": "runpod",
            "DATABASE_URL": "postgresql://u@db.example/app",
            "ORCHESTRATOR_DATABASE__BACKEND": "postgres",
        }
    )
    assert ok.provider.kind.value == "runpod"
    path = tmp_path / "runpod.yaml"
    path.write_text("provider:\n  kind: runpod\ndatabase:\n  backend: embedded\n")
    for name in ("DATABASE_URL", "SUPABASE_URL", "ORCHESTRATOR_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2, result.output
    assert "a RunPod pod cannot reach a Postgres embedded on this machine" in result.output


def test_a_warm_pool_turned_off_does_not_hold_the_credentials_lifetime() -> None:
    environ = {
        "ORCHESTRATOR_SCALING__WARM_POOL_SIZE": "0",
        "ORCHESTRATOR_SCALING__WARM_POOL_KEEP_S": "86400",
        "ORCHESTRATOR_DATABASE__WORKER_CREDENTIAL_TTL_S": "3600",
    }
    assert load_settings(environ=environ).database.worker_credential_ttl_s == 3600
