"""Removing secrets from anything a provider logs, raises or returns.

The replaced system echoed the Supabase service-role key into a log file. Every string that
leaves a provider (a log line, an exception message, `Pod.raw`) goes through `Redactor` first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "Redactor"]

MASK = "***"
# Secrets shorter than this are not scrubbed by substring: masking every "1" in a message would
# destroy it and a 3-character secret is not a secret worth the name anyway.
_MIN_SECRET_LEN = 4


class Redactor:
    """Replaces every known secret value by `***` in strings, dicts and lists."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        for secret in secrets:
            if secret and len(secret) >= _MIN_SECRET_LEN and secret not in self._secrets:
                self._secrets.append(secret)
        # Longest first, so a secret that contains another is masked whole.
        self._secrets.sort(key=len, reverse=True)

    def child(self, *secrets: str | None) -> Redactor:
        """A redactor that also masks these (per-call secrets such as a pod's env values)."""
        out = Redactor(self._secrets)
        out.add(*secrets)
        return out

    def text(self, value: str) -> str:
        return _masked(value, self._secrets)

    def data(self, value: Any) -> Any:
        """A deep copy with secrets masked; `env` entries keep their keys and lose their values."""
        return _copy(value, self._secrets)


# `data` runs over every pod of every provider list (1,000 pods, ~30 values each, every Scaler
# cycle): the common leaves (exactly str, int, float, bool, None) are handled in the loop, without a
# call each; anything else (containers, subclasses, other objects) goes through `_copy` again.
_PLAIN = (int, float, bool, type(None))


def _copy(value: Any, secrets: list[str]) -> Any:
    kind = type(value)
    if kind is dict:
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key if type(key) is str else str(key)
            if key == "env":
                out[name] = _env_keys(item)
            elif type(item) is str:
                out[name] = _masked(item, secrets) if secrets else item
            elif type(item) in _PLAIN:
                out[name] = item
            else:
                out[name] = _copy(item, secrets)
        return out
    if kind is list:
        items: list[Any] = []
        for item in value:
            if type(item) is str:
                items.append(_masked(item, secrets) if secrets else item)
            elif type(item) in _PLAIN:
                items.append(item)
            else:
                items.append(_copy(item, secrets))
        return items
    if isinstance(value, str):
        return _masked(value, secrets)
    if isinstance(value, dict):
        return _copy(dict(value), secrets)
    if isinstance(value, list | tuple):
        return [_copy(item, secrets) for item in value]
    return value


def _masked(value: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in value:
            value = value.replace(secret, MASK)
    return str(value)


def _env_keys(env: Any) -> list[str]:
    """An env answer (`["K=v", ...]`, `[{"key":..,"value":..}]` or a dict) reduced to its keys."""
    keys: list[str] = []
    if isinstance(env, dict):
        return sorted(str(k) for k in env)
    if isinstance(env, list):
        for item in env:
            if isinstance(item, str):
                keys.append(item.split("=", 1)[0])
            elif isinstance(item, dict) and "key" in item:
                keys.append(str(item["key"]))
    return keys
