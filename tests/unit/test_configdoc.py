"""The configuration reference and the example file are generated from the models and cannot drift."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from config import load_settings
from config.settings import OrchestratorSettings
from orchestrator import configdoc
from orchestrator.cli import app


def test_committed_reference_matches_the_models() -> None:
    assert configdoc.REFERENCE_PATH.read_text() == configdoc.render_reference(), (
        "docs/config-reference.md is stale: run `python -m orchestrator.configdoc`"
    )


def test_committed_example_matches_the_models() -> None:
    assert configdoc.EXAMPLE_PATH.read_text() == configdoc.render_example(), (
        "config/orchestrator.example.yaml is stale: run `python -m orchestrator.configdoc`"
    )


def test_check_mode_reports_drift(tmp_path, monkeypatch) -> None:
    stale = tmp_path / "reference.md"
    stale.write_text("old\n")
    monkeypatch.setattr(configdoc, "REFERENCE_PATH", stale)
    monkeypatch.setattr(configdoc, "ROOT", tmp_path)
    monkeypatch.setattr(configdoc, "EXAMPLE_PATH", tmp_path / "example.yaml")
    assert configdoc.main(["--check"]) == 1
    assert stale.read_text() == "old\n"
    assert configdoc.main([]) == 0
    assert configdoc.main(["--check"]) == 0


def test_every_setting_is_documented_in_both_files() -> None:
    reference = configdoc.render_reference()
    example = configdoc.render_example()
    for leaf in configdoc.leaves():
        assert leaf.description, f"{leaf.dotted} has no Field(description=...)"
        assert f"`{leaf.env_var}`" in reference
        assert f"Env: {leaf.env_var}." in " ".join(example.replace("\n", " ").replace("#", " ").split())


def test_example_holds_every_setting_at_its_default() -> None:
    data = yaml.safe_load(configdoc.EXAMPLE_PATH.read_text())
    from_file = load_settings(configdoc.EXAMPLE_PATH, environ={})
    assert from_file == OrchestratorSettings()
    for leaf in configdoc.leaves():
        node = data
        for part in leaf.path:
            assert part in node, f"{leaf.dotted} missing from the example"
            node = node[part]


def test_example_passes_config_check() -> None:
    result = CliRunner().invoke(app, ["config", "check", str(configdoc.EXAMPLE_PATH)], env={})
    assert result.exit_code == 0, result.output
