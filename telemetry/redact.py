"""Removes secrets from text before it leaves the process: log lines, span attributes, fallback files.

Two nets: the exact values of every `SecretStr` in the settings (`register_secrets`), and patterns
that look like credentials whatever their value (`password=...`, a URL's `user:pass@`, bearer
tokens, JWTs). The old system echoed keys into log files; this module is why ours cannot.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

__all__ = [
    "MASK",
    "SECRET_ENV_VARS",
    "redact",
    "redact_value",
    "register_secret",
    "register_secret_env",
    "register_secrets",
]

# The standard variables whose values are secrets (a pod gets some of them; see cloud/spec.py).
SECRET_ENV_VARS = (
    "DATABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_WORKER_TOKEN",
    "SUPABASE_JWT_SECRET",
    "RUNPOD_API_KEY",
)

MASK = "***"

# Shorter values are not registered: masking "a" or "123" everywhere would shred every message.
_MIN_SECRET_LEN = 6

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret that contains another is masked whole

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(?P<pre>\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\g<pre>" + MASK),
    # scheme://user:password@host -> scheme://user:***@host
    (re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:)[^\s@/]+(?=@)"), r"\g<pre>" + MASK),
    # key=value / key: value for credential-like keys (conninfo strings, env dumps, headers)
    (
        re.compile(
            r"(?i)(?P<pre>\b(?:password|passwd|pwd|secret|api[_-]?key|apikey|access[_-]?token|token|"
            r"service[_-]?role[_-]?key|authorization)\b\s*[=:]\s*[\"']?)(?!\*\*\*)[^\s\"',;&]+"
        ),
        r"\g<pre>" + MASK,
    ),
    # JSON web tokens (Supabase keys are JWTs)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MASK),
    # RunPod API keys
    (re.compile(r"\brpa_[A-Za-z0-9]{16,}"), MASK),
)
# Cheap substring pre-check (on the lower-cased text): a line with none of these matches no pattern
# and skips the regexes, which keeps redaction near 1 µs for ordinary lines.
_TRIGGERS = ("://", "pass", "pwd", "secret", "key", "token", "bearer", "authorization", "eyj", "rpa_")


def register_secret(value: str | None) -> None:
    """Mask this exact value (and its URL-decoded form) wherever it appears from now on."""
    global _secrets
    if not value:
        return
    candidates = {value, unquote(value)}
    with _lock:
        merged = set(_secrets) | {c for c in candidates if len(c) >= _MIN_SECRET_LEN}
        _secrets = tuple(sorted(merged, key=len, reverse=True))


def _secret_values(obj: Any) -> Iterable[str]:
    if isinstance(obj, SecretStr):
        value = obj.get_secret_value()
        yield value
        # A database URL is a secret as a whole, and its password is one on its own.
        try:
            parts = urlsplit(value)
            if parts.password:
                yield parts.password
        except ValueError:  # not a URL: no password part (the `password=` form is found below)
            pass
        for match in re.finditer(r"password=([^\s]+)", value):
            yield match.group(1)
    elif isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            yield from _secret_values(getattr(obj, name, None))
    elif isinstance(obj, Mapping):
        for item in obj.values():
            yield from _secret_values(item)
    elif isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            yield from _secret_values(item)


def register_secrets(settings: BaseModel) -> int:
    """Register every `SecretStr` found anywhere in `settings`; returns how many values were found."""
    found = list(_secret_values(settings))
    for value in found:
        register_secret(value)
    return len(found)


def register_secret_env(environ: Mapping[str, str]) -> int:
    """Register the values of `SECRET_ENV_VARS` in `environ` (and a database URL's password on its own)."""
    found = [v for name in SECRET_ENV_VARS if (value := environ.get(name)) for v in _secret_values(SecretStr(value))]
    for value in found:
        register_secret(value)
    return len(found)


def redact(text: str) -> str:
    """`text` with registered secrets and credential-looking substrings replaced by `***`."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    if any(trigger in lowered for trigger in _TRIGGERS):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    """Redact strings inside a JSON-like value (dicts, lists); other values pass through."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
