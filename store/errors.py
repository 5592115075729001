"""Turning driver errors into the store's errors, with messages that never carry a secret.

A message names where we tried to go (host, port, database, user, or the Supabase URL) and what
was tried; it never contains a password, a key, or the raw connection string.
"""

from __future__ import annotations

import re

import psycopg

from store.base import DatabaseUnavailable, StaleEpoch, StoreError

__all__ = [
    "STALE_EPOCH_SQLSTATE",
    "describe_conninfo",
    "error_from_sql",
    "redact",
    "unavailable",
]

# Raised by check_epoch() in store/migrations/0010_leases.sql for a fenced write.
STALE_EPOCH_SQLSTATE = "ORF01"

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@", re.I)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact(text: str, *secrets: str | None) -> str:
    """Remove passwords from URLs and `password=` pairs, and every given secret, from text."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def describe_conninfo(conninfo: str) -> str:
    """`host:port/dbname as user`, from any libpq connection string, without the password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparseable connection string"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or params.get("user") or "postgres")
    user = params.get("user")
    where = f"{host}:{port}/{dbname}" if not host.startswith("/") else f"socket {host}:{port}/{dbname}"
    return f"{where} as {user}" if user else where


def _password_of(conninfo: str) -> str | None:
    try:
        value = psycopg.conninfo.conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        return None
    return str(value) if value else None


def unavailable(conninfo: str, tried: str, cause: BaseException | None = None) -> DatabaseUnavailable:
    """A DatabaseUnavailable naming the place and what was tried, with the driver's reason (redacted)."""
    reason = ""
    if cause is not None:
        lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
        if lines:
            first = lines[0].removeprefix("connection failed: ")
            reason = ": " + redact(first, _password_of(conninfo))
    return DatabaseUnavailable(f"postgres at {describe_conninfo(conninfo)} is unreachable ({tried}){reason}")


def error_from_sql(sqlstate: str | None, message: str, hint: str | None = None) -> StoreError:
    """Map an error raised inside a SQL function (either transport) to the store's errors."""
    if sqlstate == STALE_EPOCH_SQLSTATE or message.startswith("stale epoch"):
        return StaleEpoch(message)
    text = f"{message} (SQLSTATE {sqlstate})" if sqlstate else message
    if hint:
        text += f"; hint: {hint}"
    return StoreError(text)
