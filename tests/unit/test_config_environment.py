"""`OrchestratorSettings(**values)` reads the ORCHESTRATOR_* variables as a pydantic-settings
BaseSettings with sources (environment, init) did, while a process that only receives settings
(a WorkerLifecycle unpickling the Scaler's) loads neither pydantic-settings nor the validators."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import OrchestratorSettings

ROOT = Path(__file__).resolve().parents[2]


def test_the_environment_wins_over_the_values_and_merges_into_their_sections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_SCALING__MAX_WORKERS", "7")
    monkeypatch.setenv("orchestrator_lease_ttl_s", "45")  # names are not case-sensitive
    monkeypatch.setenv("ORCHESTRATOR_PROVIDER", '{"name_prefix": "env-"}')  # a whole section as JSON
    monkeypatch.setenv("ORCHESTRATOR_NO_SUCH_FIELD", "1")  # ignored, as BaseSettings ignored it
    settings = OrchestratorSettings(
        scaling={"min_workers": 1, "max_workers": 3}, provider={"kind": "local"}, lease_ttl_s=50
    )
    assert settings.scaling.max_workers == 7 and settings.scaling.min_workers == 1
    assert settings.lease_ttl_s == 45
    assert settings.provider.kind == "local" and settings.provider.name_prefix == "env-"
    assert settings.model_fields_set == {"scaling", "provider", "lease_ttl_s"}


def test_validate_reads_it_too_a_copy_does_not_and_a_bad_variable_names_its_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_SCALING__MAX_WORKERS", "7")
    settings = OrchestratorSettings.model_validate({"scaling": {"max_workers": 3}})
    assert settings.scaling.max_workers == 7
    monkeypatch.setenv("ORCHESTRATOR_SCALING__MAX_WORKERS", "8")
    assert pickle.loads(pickle.dumps(settings)).scaling.max_workers == 7
    assert settings.model_copy().scaling.max_workers == 7
    monkeypatch.setenv("ORCHESTRATOR_SCALING__MAX_WORKERS", "many")
    with pytest.raises(ValidationError) as caught:
        OrchestratorSettings()
    assert [error["loc"] for error in caught.value.errors()] == [("scaling", "max_workers")]


def test_a_process_that_only_receives_settings_loads_no_pydantic_settings(tmp_path: Path) -> None:
    pickled = tmp_path / "settings.pickle"
    pickled.write_bytes(pickle.dumps(OrchestratorSettings(scaling={"max_workers": 9})))
    probe = (
        "import pickle, sys\n"
        "import config, fleet.lifecycle, fleet.supervision, store.factory, cloud.spec, telemetry.log_handler\n"
        f"settings = pickle.loads(open({str(pickled)!r}, 'rb').read())\n"
        "assert settings.scaling.max_workers == 9\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic_settings', 'dotenv')))\n"
        "print(type(settings).__pydantic_complete__, type(settings.scaling).__pydantic_complete__)\n"
        "type(settings)()\n"  # building settings does load it: what the first line must not show
        "print('pydantic_settings' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out == ["[]", "False False", "True"], out
