"""A loopback stand-in for PostgREST's `rpc` endpoint, over the same real Postgres.

It answers `POST /rest/v1/rpc/<fn>` the way PostgREST does: the JSON body's keys are the
function's named arguments, typed by the function's signature through `json_to_record` (as
PostgREST does), and the answer is the function's result as JSON. SQL errors are answered in
PostgREST's shape `{code, message, details, hint}` with PostgREST's status for the SQLSTATE.

Who calls, as Supabase decides it: `apikey` must be a project key (the service-role key, the anon
key) or, as for a PostgREST reached without the gateway, the bearer token itself; then
`Authorization: Bearer <token>`. The service-role key (an opaque key here) runs the call as the
pool's own role, like the orchestrator's. Any other token must be a JWT signed HS256 with
`jwt_secret`, unexpired, whose `role` exists: the call then runs in a transaction with `SET LOCAL ROLE
<role>` and `request.jwt.claims` set to its claims, as PostgREST does. Anything else is 401.

Knobs for the retry tests: `fail_next(n, status=503, execute=False)` fails the next n calls
(optionally after running the SQL, as when a gateway loses the answer), `delay_s` delays every
answer, `calls` records every call's function name.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

__all__ = ["TEST_JWT_SECRET", "PostgrestStandin", "status_for_sqlstate"]

RPC_PREFIX = "/rest/v1/rpc/"
# The project's JWT secret of the tests (HS256 wants at least 32 bytes).
TEST_JWT_SECRET = "test-jwt-secret-of-the-loopback-postgrest-not-secret"


@dataclass(frozen=True)
class _Caller:
    role: str | None  # None: the pool's own role (the service-role key)
    claims: dict[str, Any]


def _unauthorized(code: str, message: str) -> tuple[int, dict[str, Any]]:
    return 401, {"code": code, "message": message, "details": None, "hint": None}


def status_for_sqlstate(code: str) -> int:
    """PostgREST's mapping of a SQLSTATE to an HTTP status (docs: "Errors", "SQLSTATE")."""
    if code.startswith("PT") and code[2:].isdigit():
        return int(code[2:])
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "42883": 404,
        "42P01": 404,
        "42501": 403,
        "P0001": 400,
    }
    if code in exact:
        return exact[code]
    by_class = {
        "08": 503,
        "09": 500,
        "0L": 403,
        "0P": 403,
        "23": 400,
        "25": 500,
        "28": 403,
        "2D": 500,
        "38": 500,
        "39": 500,
        "3B": 500,
        "40": 500,
        "53": 503,
        "54": 413,
        "55": 500,
        "57": 500,
        "58": 500,
        "F0": 500,
        "HV": 500,
        "P0": 500,
        "XX": 500,
    }
    return by_class.get(code[:2], 400)


@dataclass
class _Control:
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_remaining: int = 0
    fail_status: int = 503
    fail_after_executing: bool = False
    fail_json: bool = False
    fail_only: str | None = None  # fail only calls of this function (others pass)
    delay_s: float = 0.0
    calls: list[str] = field(default_factory=list)

    def take_failure(self, fn: str) -> tuple[int, bool, bool] | None:
        with self.lock:
            if self.fail_remaining <= 0 or self.fail_only not in (None, fn):
                return None
            self.fail_remaining -= 1
            return self.fail_status, self.fail_after_executing, self.fail_json


class PostgrestStandin:
    """Start with `with PostgrestStandin(conninfo) as standin:`; point supabase-py at `standin.url`."""

    def __init__(
        self,
        conninfo: str,
        service_key: str = "test-service-role-key-not-secret",
        exposed_schemas: tuple[str, ...] = ("public", "orchestrator"),
        *,
        anon_key: str = "test-anon-key-not-secret",
        jwt_secret: str = TEST_JWT_SECRET,
    ) -> None:
        """`exposed_schemas` is PostgREST's db-schemas (the first is the default profile); a project
        that exposes `orchestrator` as its README asks."""
        self.conninfo = conninfo
        self.exposed_schemas = exposed_schemas
        self.service_key = service_key
        self.anon_key = anon_key
        self.jwt_secret = jwt_secret
        self._known_roles: dict[str, bool] = {}
        self.control = _Control()
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=8, kwargs={"autocommit": True}, open=False)
        self._signatures: dict[tuple[str, str], dict[str, str] | None] = {}
        self._signatures_lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                standin._handle(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._serve, name="postgrest-standin", daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.05)

    def start(self) -> PostgrestStandin:
        self._pool.open(wait=True, timeout=10)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.close()

    def __enter__(self) -> PostgrestStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- knobs -----------------------------------------------------------------------------------
    def fail_next(
        self, n: int, status: int = 503, *, execute: bool = False, json_body: bool = False, only: str | None = None
    ) -> None:
        """Fail the next n rpc calls (of function `only`, if given) with `status`; with execute=True the SQL
        runs first (lost answer)."""
        with self.control.lock:
            self.control.fail_only = only
            self.control.fail_remaining = n
            self.control.fail_status = status
            self.control.fail_after_executing = execute
            self.control.fail_json = json_body

    def set_delay(self, seconds: float) -> None:
        self.control.delay_s = seconds

    @property
    def calls(self) -> list[str]:
        with self.control.lock:
            return list(self.control.calls)

    # --- serving ---------------------------------------------------------------------------------
    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        if not request.path.startswith(RPC_PREFIX):
            self._send(
                request,
                404,
                {"code": "PGRST125", "message": f"Invalid path {request.path}", "details": None, "hint": None},
            )
            return
        caller = self._authenticate(request.headers.get("apikey"), request.headers.get("Authorization"))
        if isinstance(caller, tuple):
            self._send(request, *caller)
            return
        fn = request.path[len(RPC_PREFIX) :].split("?", 1)[0]
        schema = request.headers.get("Content-Profile") or self.exposed_schemas[0]
        if schema not in self.exposed_schemas:
            self._send(
                request,
                406,
                {
                    "code": "PGRST106",
                    "message": f"The schema must be one of the following: {', '.join(self.exposed_schemas)}",
                    "details": None,
                    "hint": None,
                },
            )
            return
        with self.control.lock:
            self.control.calls.append(fn)
        failure = self.control.take_failure(fn)
        if failure is not None and not failure[1]:
            self._fail(request, failure)
            return
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send(
                request, 400, {"code": "PGRST102", "message": "Empty or invalid json", "details": None, "hint": None}
            )
            return
        status, answer = self._run(schema, fn, body if isinstance(body, dict) else {}, caller)
        if failure is not None:
            self._fail(request, failure)
            return
        if self.control.delay_s:
            time.sleep(self.control.delay_s)
        self._send_raw(request, status, answer)

    def _fail(self, request: BaseHTTPRequestHandler, failure: tuple[int, bool, bool]) -> None:
        status, _, as_json = failure
        if as_json:
            self._send(
                request,
                status,
                {
                    "code": "PGRST002",
                    "message": "Could not query the database for the schema cache. Retrying.",
                    "details": None,
                    "hint": None,
                },
            )
        else:
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            self._send_raw(request, status, f"<html><body>{status} {phrase}</body></html>".encode(), "text/html")

    def _authenticate(self, apikey: str | None, authorization: str | None) -> _Caller | tuple[int, dict[str, Any]]:
        """The caller, or (401, PostgREST's error body)."""
        token = authorization[len("Bearer ") :] if authorization and authorization.startswith("Bearer ") else None
        if token is None or apikey not in {self.service_key, self.anon_key, token}:
            return _unauthorized("PGRST301", "No suitable key or wrong key type")
        if token == self.service_key:
            return _Caller(role=None, claims={"role": "service_role"})
        try:
            claims = jwt.decode(token, self.jwt_secret, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.ExpiredSignatureError:
            return _unauthorized("PGRST303", "JWT expired")
        except jwt.InvalidTokenError as exc:
            return _unauthorized("PGRST301", f"JWT could not be decoded: {type(exc).__name__}")
        role = claims.get("role")
        if not isinstance(role, str) or not self._role_exists(role):
            return _unauthorized("PGRST301", f"role {role!r} of the JWT does not exist")
        return _Caller(role=role, claims=claims)

    def _role_exists(self, role: str) -> bool:
        known = self._known_roles.get(role)
        if known is None:
            with self._pool.connection() as conn:
                row = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)", (role,)).fetchone()
            known = bool(row and row[0])
            if known:  # a role may be created later; a known one stays known
                self._known_roles[role] = known
        return known

    def _signature(self, schema: str, fn: str) -> dict[str, str] | None:
        """Argument name -> SQL type of schema.fn, or None when there is no such function."""
        with self._signatures_lock:
            if (schema, fn) in self._signatures:
                return self._signatures[(schema, fn)]
        with self._pool.connection() as conn:
            row = conn.execute(
                """
                SELECT p.proargnames, array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t)
                FROM pg_proc p
                WHERE p.pronamespace = %s::regnamespace AND p.proname = %s
                """,
                (schema, fn),
            ).fetchone()
        signature = None if row is None else dict(zip(row[0] or [], row[1], strict=False))
        with self._signatures_lock:
            self._signatures[(schema, fn)] = signature
        return signature

    def _run(self, schema: str, fn: str, body: dict[str, Any], caller: _Caller) -> tuple[int, bytes]:
        signature = self._signature(schema, fn)
        if signature is None or any(name not in signature for name in body):
            args = ", ".join(sorted(body))
            return 404, _json(
                {
                    "code": "PGRST202",
                    "details": None,
                    "hint": None,
                    "message": f"Could not find the function {schema}.{fn}({args}) in the schema cache",
                }
            )
        names = list(body)
        if names:
            query = sql.SQL("SELECT to_json({fn}({args}))::text FROM json_to_record(%s::json) AS r({cols})").format(
                fn=sql.Identifier(schema, fn),
                args=sql.SQL(", ").join(
                    sql.SQL("{} => r.{}").format(sql.Identifier(n), sql.Identifier(n)) for n in names
                ),
                cols=sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(signature[n])) for n in names
                ),
            )
            params: tuple[Any, ...] = (json.dumps(body),)
        else:
            query = sql.SQL("SELECT to_json({fn}())::text").format(fn=sql.Identifier(schema, fn))
            params = ()
        try:
            with self._pool.connection() as conn:
                if caller.role is None:
                    row = conn.execute(query, params).fetchone()
                else:
                    with conn.transaction():  # PostgREST: role and claims for this call only
                        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(caller.role)))
                        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(caller.claims),))
                        row = conn.execute(query, params).fetchone()
        except psycopg.Error as exc:
            code = exc.sqlstate or "XX000"
            diag = exc.diag
            return status_for_sqlstate(code), _json(
                {
                    "code": code,
                    "message": diag.message_primary or str(exc),
                    "details": diag.message_detail,
                    "hint": diag.message_hint,
                }
            )
        text = None if row is None else row[0]
        return 200, (text if text is not None else "null").encode()

    def _send(self, request: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        self._send_raw(request, status, _json(payload))

    @staticmethod
    def _send_raw(
        request: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str = "application/json"
    ) -> None:
        try:
            request.send_response(status)
            request.send_header("Content-Type", f"{content_type}; charset=utf-8")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (the delay knob): PostgREST would not notice either


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()
