"""The `orchestrator` command sends Ray's token when one is at hand, and leaves an explicit choice alone."""

from __future__ import annotations

from pathlib import Path

from orchestrator.cli import use_rays_token_when_there_is_one


def test_a_kept_token_turns_token_auth_on(tmp_path: Path) -> None:
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    env: dict[str, str] = {}
    use_rays_token_when_there_is_one(env, tmp_path)
    assert env == {"RAY_AUTH_MODE": "token"}


def test_a_token_in_the_environment_or_at_its_own_path_does_too(tmp_path: Path) -> None:
    env = {"RAY_AUTH_TOKEN": "t"}
    use_rays_token_when_there_is_one(env, tmp_path)
    assert env["RAY_AUTH_MODE"] == "token"
    (tmp_path / "tok").write_text("t")
    env = {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}
    use_rays_token_when_there_is_one(env, tmp_path / "nowhere")
    assert env["RAY_AUTH_MODE"] == "token"


def test_no_token_or_an_explicit_mode_changes_nothing(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    use_rays_token_when_there_is_one(env, tmp_path)
    assert env == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    env = {"RAY_AUTH_MODE": "disabled"}
    use_rays_token_when_there_is_one(env, tmp_path)
    assert env == {"RAY_AUTH_MODE": "disabled"}
