"""Secrets never leave a process: registered values and credential-looking text are masked."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from config.settings import OrchestratorSettings
from telemetry import redact


def test_registered_settings_secrets_are_masked() -> None:
    settings = OrchestratorSettings(
        database={"backend": "postgres", "url": "postgresql://orch:S3cretPassw0rd@db.example:5432/app"},
        provider={"runpod_api_key": SecretStr("runpod-key-0123456789")},
    )
    assert redact.register_secrets(settings) >= 3
    text = "dsn postgresql://orch:S3cretPassw0rd@db.example:5432/app key runpod-key-0123456789 pw S3cretPassw0rd"
    out = redact.redact(text)
    assert "S3cretPassw0rd" not in out and "runpod-key-0123456789" not in out
    assert out.count(redact.MASK) >= 3


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("connect postgresql://u:pa55word@h/db failed", "pa55word"),
        ("host=x password=topsecret1 dbname=y", "topsecret1"),
        ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
        ("key eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZSJ9.c2lnbmF0dXJlMTIz", "eyJhbGciOiJIUzI1NiJ9"),
        ("api_key: rpa_ABCDEFGHIJKLMNOPQRSTUV", "rpa_ABCDEFGHIJKLMNOPQRSTUV"),
    ],
)
def test_credential_patterns_are_masked(text: str, leak: str) -> None:
    assert leak not in redact.redact(text)


def test_ordinary_lines_pass_unchanged() -> None:
    line = "Cycle 638 completed: 0 spawned, 0 terminated; ratio=0.5 at 17:35:31"
    assert redact.redact(line) == line
    assert redact.redact_value({"a": ["x password=abcdefg"], "n": 3}) == {"a": ["x password=***"], "n": 3}
