"""SupabaseStore: the store over Supabase's REST API (supabase-py `rpc`) with the service-role key.

The same SQL functions as PostgresStore, called as `POST /rest/v1/rpc/<fn>`. supabase-py retries
only GET/HEAD, so a 503 on an rpc POST raises at once; this store retries transient failures
(HTTP 5xx, timeouts, dropped connections, PostgREST's connection errors) with exponential backoff
and full jitter, bounded by `retries`, and ONLY for calls that are safe to repeat (RpcStore passes
`safe`). `claim_next_task` is never repeated: a claim whose answer was lost may have taken a task.
There is no LISTEN over REST: `wait_for_task_change` sleeps and returns False.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx
import supabase
from postgrest.exceptions import APIError

from store.base import DatabaseUnavailable, StoreError
from store.errors import error_from_sql, redact
from store.migrate import SCHEMA
from store.rpc import JsonArg, RpcStore, backoff_delays

__all__ = ["SupabaseStore"]

_log = logging.getLogger(__name__)

# PostgREST's own codes for "could not reach / query the database" (503/504): transient.
_PGRST_TRANSIENT = {"PGRST000", "PGRST001", "PGRST002", "PGRST003"}
# PostgREST's codes for a bad or missing JWT.
_PGRST_AUTH = {"PGRST300", "PGRST301", "PGRST302"}
# SQLSTATEs worth another try: connection exceptions, resources, shutdown, serialization, deadlock.
_SQLSTATE_TRANSIENT_PREFIXES = ("08", "53", "57P")
_SQLSTATE_TRANSIENT = {"40001", "40P01"}


class SupabaseStore(RpcStore):
    """The Store over supabase-py. The key is a secret: never shown by repr, describe or errors."""

    def __init__(
        self,
        url: str,
        service_role_key: str,
        *,
        retries: int = 4,
        timeout_s: float = 10.0,
        backoff_base_s: float = 0.2,
        backoff_cap_s: float = 5.0,
    ) -> None:
        self._url = url.rstrip("/")
        self._key = service_role_key
        self._secrets: tuple[str, ...] = (service_role_key,)  # every secret an error text must not show
        # What to do when the key is refused, and who may call what (a worker's token differs).
        self._refused_hint = "set SUPABASE_SERVICE_ROLE_KEY to the project's service-role key"
        self._denied_hint = "the orchestrator needs the service-role key, and `orchestrator migrate --sql` applied"
        self._retries = retries
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._status = threading.local()  # HTTP status of this thread's last response
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            event_hooks={"response": [self._remember_status]},
        )
        try:
            options = supabase.ClientOptions(
                schema=SCHEMA, auto_refresh_token=False, persist_session=False, httpx_client=self._http
            )
            self._client = supabase.create_client(self._url, service_role_key, options)
        except supabase.SupabaseException as exc:
            self._http.close()
            raise StoreError(f"supabase at {self._url}: {redact(str(exc), service_role_key)}") from None

    @classmethod
    def with_worker_token(cls, url: str, token: str, *, apikey: str | None = None, **kwargs: Any) -> SupabaseStore:
        """A worker's store: its own JWT as the bearer token (PostgREST runs each call as the role it
        names), and `apikey` the project's anon key for Supabase's API gateway (the token itself when
        none is given, for a PostgREST reached directly). Both are secrets here: never shown."""
        store = cls(url, apikey or token, **kwargs)
        # Before the first call: supabase-py builds its PostgREST client from these headers on first use.
        store._client.options.headers["Authorization"] = f"Bearer {token}"
        store._key = token
        store._secrets = (token, apikey or token)
        store._refused_hint = (
            "the worker's SUPABASE_WORKER_TOKEN was refused: expired, revoked (its worker was terminated), "
            "or signed with another JWT secret than the project's"
        )
        store._denied_hint = "a worker's token may call only its own worker functions, for its own worker id"
        return store

    def _remember_status(self, response: httpx.Response) -> None:
        self._status.code = response.status_code

    # --- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def describe(self) -> str:
        return f"supabase at {self._url}"

    def wait_for_task_change(self, timeout_s: float) -> bool:
        time.sleep(max(0.0, timeout_s))
        return False

    # --- transport -------------------------------------------------------------------------------
    def _call(self, fn: str, args: dict[str, Any], *, safe: bool) -> Any:
        params = {name: _adapt(value) for name, value in args.items()}
        delays = backoff_delays(self._retries if safe else 0, self._backoff_base_s, self._backoff_cap_s)
        attempt = 0
        while True:
            self._status.code = None
            try:
                return self._client.rpc(fn, params).execute().data
            except APIError as exc:
                status: int | None = self._status.code
                code = str(exc.code) if exc.code is not None else None
                message = redact(str(exc.message or ""), *self._secrets)
                if _is_auth_failure(status, code, message):
                    raise StoreError(
                        f"supabase at {self._url} refused the key (HTTP {status}, {code or 'no code'}: {message}); "
                        f"{self._refused_hint}"
                    ) from None
                if status == 403 or code == "42501":
                    raise StoreError(
                        f"supabase at {self._url}: permission denied calling {fn} ({message}); {self._denied_hint}"
                    ) from None
                if code == "PGRST106":
                    raise StoreError(
                        f"supabase at {self._url} does not expose the schema {SCHEMA} ({message}); add "
                        f"{SCHEMA} to Settings > API > Exposed schemas (PostgREST db-schemas)"
                    ) from None
                if status == 404 and code in {"PGRST202", "42883"}:
                    raise StoreError(
                        f"supabase at {self._url}: function {fn} not found ({message}); apply the schema with "
                        "`orchestrator migrate --sql`"
                    ) from None
                if not _is_transient(status, code):
                    raise error_from_sql(code, message, exc.hint) from None
                failure = f"HTTP {status}" + (f" {code}" if code and code != str(status) else "")
            except httpx.TimeoutException as exc:
                failure = f"timeout ({type(exc).__name__})"
                if not safe:
                    raise DatabaseUnavailable(
                        f"supabase at {self._url}: {fn} timed out; its outcome is unknown and it is not retried"
                    ) from None
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {redact(str(exc), *self._secrets)}"
            if attempt >= len(delays):
                tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                if not safe:
                    tries += ", not retried as it is not safe to repeat"
                raise DatabaseUnavailable(
                    f"supabase at {self._url} is unavailable (POST rpc/{fn}, {tries}): {failure}"
                ) from None
            _log.warning("store: rpc/%s failed transiently (%s); retry %d of %d", fn, failure, attempt + 1, len(delays))
            time.sleep(delays[attempt])
            attempt += 1


def _adapt(value: Any) -> Any:
    if isinstance(value, JsonArg):
        return value.value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _is_auth_failure(status: int | None, code: str | None, message: str) -> bool:
    if status == 401 or code in _PGRST_AUTH:
        return True
    return "Invalid API key" in message or "JWT" in message


def _is_transient(status: int | None, code: str | None) -> bool:
    if code in _PGRST_TRANSIENT:
        return True
    if code and len(code) == 5:  # a SQLSTATE raised in the database
        return code.startswith(_SQLSTATE_TRANSIENT_PREFIXES) or code in _SQLSTATE_TRANSIENT
    # A 5xx whose body is no SQL error (a gateway, a proxy, PostgREST itself): try again.
    return status is not None and status >= 500
