"""PostgresStore: the store over a direct Postgres connection (psycopg 3 and a connection pool).

Each operation is one `SELECT orchestrator.fn(p_arg => ...)` in autocommit mode, so every call is its own
transaction (a claim's advisory lock is released when it commits). Works with a local server,
the embedded pgserver and Supabase's direct and pooler connection strings. Postgres-only extras:
`wait_for_task_change` LISTENs on `task_changes` on a dedicated connection (falling back to a
sleep where LISTEN is not available, e.g. behind a transaction-mode pooler).

A database outage (a restart, a failover, a crash): a call whose connection fails asks the server
directly with one connection attempt. No answer: DatabaseUnavailable at once, and the store
remembers the server is down, so every later call first makes that one attempt instead of waiting
on the pool (a caller's loop learns of the outage in milliseconds, not after the pool's timeout and
retries). An answer: the server is back, the pool's connections (all cut by the restart, and its
own reconnect backing off for up to minutes) are replaced by a fresh pool, and a call that is safe
to repeat runs again. The store never waits out an outage itself: its callers do, with their own
backoff (fleet.supervision.Outage), and never give up on their own.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from store.base import StoreError
from store.errors import describe_conninfo, error_from_sql, unavailable
from store.migrate import SCHEMA
from store.rpc import JsonArg, RpcStore, backoff_delays

__all__ = ["NOTIFY_CHANNEL", "PostgresStore", "check_reachable"]

_log = logging.getLogger(__name__)

_UNSEEN = object()  # no queue_marker() read yet

NOTIFY_CHANNEL = "task_changes"  # pg_notify'd by the tasks triggers of 0020_tasks.sql


class PostgresStore(RpcStore):
    """The Store over psycopg. `conninfo` is a libpq URL or key=value string; it is never shown."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 8,
        connect_timeout_s: float = 5.0,
        retries: int = 2,
        application_name: str = "gpu-orchestrator",
        change_probe_s: float | None = None,
        require_reachable: bool = True,
    ) -> None:
        """`change_probe_s` makes `wait_for_task_change` poll `queue_marker()` at that interval
        instead of LISTENing (a queue whose table has no trigger of ours: the reigh profile).

        `require_reachable` False opens the store even while the database is down (an actor that Ray
        restarts during an outage must come up, not fail its constructor for good): calls raise
        DatabaseUnavailable until it answers."""
        self._conninfo = conninfo
        self._where = describe_conninfo(conninfo)
        self._connect_timeout_s = connect_timeout_s
        self._retries = retries
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout_s)),
            "application_name": application_name,
            # No server-side prepared statements: transaction-mode poolers (Supabase's Supavisor on
            # port 6543, pgbouncer) hand each transaction to any backend. Each call is one tiny
            # `SELECT fn(...)`, so planning it again costs little.
            "prepare_threshold": None,
        }
        self._queries: dict[tuple[str, tuple[str, ...]], sql.Composed] = {}
        self._change_probe_s = change_probe_s
        self._marker: object = _UNSEEN  # the last queue_marker() seen (None: an empty queue)
        self._listen_lock = threading.Lock()
        self._listen_conn: psycopg.Connection[Any] | None = None
        self._listen_broken = False
        self._min_size = min_size
        self._max_size = max(min_size, max_size)
        # Set while the server is known to be down (monotonic time of the first failed call); the
        # pool is replaced under the lock once it answers again.
        self._down_since: float | None = None
        self._pool_lock = threading.Lock()
        if not require_reachable:
            self._pool = self._new_pool()
            self._pool.open(wait=False)
            return
        # One direct attempt first: a clear, secret-free error instead of the pool's retry noise.
        check_reachable(conninfo, connect_timeout_s)
        self._pool = self._new_pool()
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as exc:
            cause = self._probe_error()
            self._pool.close(timeout=0)
            raise unavailable(
                conninfo, f"connecting for {connect_timeout_s:g}s with a pool of {min_size}", cause
            ) from exc

    def _new_pool(self) -> ConnectionPool:
        return ConnectionPool(
            self._conninfo,
            min_size=self._min_size,
            max_size=self._max_size,
            kwargs=self._kwargs,
            timeout=self._connect_timeout_s,
            open=False,
            name="store",
        )

    def _probe_error(self) -> BaseException | None:
        """Why a connection fails (the pool hides it): one direct attempt."""
        try:
            psycopg.connect(self._conninfo, **self._kwargs).close()
        except psycopg.Error as exc:
            return exc
        return None

    @property
    def database_down(self) -> bool:
        """Whether the last call found the server down (the next one asks it directly first)."""
        return self._down_since is not None

    def _check_server(self, fn: str, seen: ConnectionPool, *, replace: bool = True) -> None:
        """After a failed connection, or while the server is known to be down: one direct attempt.
        Down: remember it and raise DatabaseUnavailable. Up: the pool `seen` (whose connections the
        server cut) is replaced by a fresh one, unless another thread did so already, or unless
        `replace` is False and the server was not down (a pool that is only busy is kept)."""
        cause = self._probe_error()
        if cause is not None:
            if self._down_since is None:
                self._down_since = time.monotonic()
                _log.warning("store: the database at %s is unreachable (calling %s)", self._where, fn)
            raise unavailable(self._conninfo, f"calling {fn}", cause) from None
        with self._pool_lock:
            was_down = self._down_since
            self._down_since = None
            if self._pool is not seen or (not replace and was_down is None):
                return
            fresh = self._new_pool()
            fresh.open(wait=False)
            self._pool = fresh
        if was_down is not None:
            _log.warning(
                "store: the database at %s answers again after %.1fs; fresh connections",
                self._where,
                time.monotonic() - was_down,
            )
        seen.close(timeout=0)  # its connections are dead; a call still holding one fails and retries

    # --- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        with self._listen_lock:
            if self._listen_conn is not None:
                self._listen_conn.close()
                self._listen_conn = None
        self._pool.close()

    def describe(self) -> str:
        return f"postgres at {self._where}"

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool, for benchmarks and tests that need raw SQL in the same database."""
        return self._pool

    # --- transport -------------------------------------------------------------------------------
    def _query(self, fn: str, names: tuple[str, ...]) -> sql.Composed:
        key = (fn, names)
        query = self._queries.get(key)
        if query is None:
            query = sql.SQL("SELECT {}({})").format(
                sql.Identifier(SCHEMA, fn),
                sql.SQL(", ").join(
                    sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in names
                ),
            )
            self._queries[key] = query
        return query

    def _call(self, fn: str, args: dict[str, Any], *, safe: bool) -> Any:
        params = {name: _adapt(v) for name, v in args.items()}
        query = self._query(fn, tuple(params))
        delays = backoff_delays(self._retries if safe else 0)
        rollbacks = backoff_delays(max(self._retries, 2), base_s=0.01)
        attempt = 0
        while True:
            pool = self._pool
            if self._down_since is not None:  # known down: ask the server, not the pool's timeout
                self._check_server(fn, pool)
                pool = self._pool
            try:
                with pool.connection() as conn:
                    row = conn.execute(query, params).fetchone()
                return None if row is None else row[0]
            except psycopg.errors.TransactionRollback as exc:
                # Deadlock or serialization failure: the server rolled the call back, so nothing
                # happened and any call (a claim too) may run again.
                if not rollbacks:
                    raise error_from_sql(exc.sqlstate, exc.diag.message_primary or str(exc)) from None
                time.sleep(rollbacks.pop(0))
            except (psycopg.OperationalError, PoolTimeout) as exc:
                if isinstance(exc, psycopg.errors.QueryCanceled):
                    raise StoreError(f"{fn}: {exc}") from None
                # Is the server there at all? Down: DatabaseUnavailable now. Up again (a restart
                # cut this connection): a fresh pool, and a safe call runs again below. A call that
                # never got a connection (the pool timed out, or was replaced while it waited) was
                # never sent, so it may run again whatever it is, once.
                never_sent = isinstance(exc, (PoolTimeout, PoolClosed))
                self._check_server(fn, pool, replace=not never_sent)
                if never_sent and attempt == 0 and not delays:
                    attempt += 1
                    continue
                if attempt >= len(delays):
                    what = f"calling {fn}" + (f", {attempt + 1} attempts" if attempt else "")
                    raise unavailable(self._conninfo, what, exc) from None
                _log.warning("store: %s failed transiently (%s); retrying", fn, type(exc).__name__)
                time.sleep(delays[attempt])
                attempt += 1
            except psycopg.Error as exc:
                diag = exc.diag
                raise error_from_sql(exc.sqlstate, diag.message_primary or str(exc), diag.message_hint) from None

    # --- notifications ---------------------------------------------------------------------------
    def wait_for_task_change(self, timeout_s: float) -> bool:
        if self._change_probe_s:
            return self._probe_for_change(timeout_s, self._change_probe_s)
        with self._listen_lock:
            conn = self._listen_connection()
            if conn is None:
                time.sleep(max(0.0, timeout_s))
                return False
            try:
                woke = any(True for _ in conn.notifies(timeout=max(0.0, timeout_s), stop_after=1))
                if woke:
                    # Fold a burst into one wake-up. Not nested in the generator above: notifies()
                    # holds the connection's (non-reentrant) lock while it runs.
                    for _ in conn.notifies(timeout=0.01):
                        pass
                return woke
            except psycopg.OperationalError:
                conn.close()
                self._listen_conn = None
                return False

    def _probe_for_change(self, timeout_s: float, every_s: float) -> bool:
        """Poll the queue's marker until it moves (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            marker = self._call("queue_marker", {}, safe=True)
            if marker != self._marker:
                first = self._marker is _UNSEEN
                self._marker = marker
                if not first:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(every_s, left))

    def _listen_connection(self) -> psycopg.Connection[Any] | None:
        if self._listen_conn is not None and not self._listen_conn.closed:
            return self._listen_conn
        try:
            conn = psycopg.connect(self._conninfo, **self._kwargs)
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as exc:
            if not self._listen_broken:
                _log.warning("store: LISTEN %s unavailable at %s (%s); polling", NOTIFY_CHANNEL, self._where, exc)
            self._listen_broken = True
            return None
        self._listen_conn = conn
        return conn


def check_reachable(conninfo: str, connect_timeout_s: float = 5.0) -> None:
    """Raise DatabaseUnavailable (naming host and what was tried) unless one connection succeeds."""
    try:
        psycopg.connect(conninfo, connect_timeout=max(1, round(connect_timeout_s)), autocommit=True).close()
    except psycopg.Error as exc:
        raise unavailable(conninfo, f"one connection with a {connect_timeout_s:g}s timeout", exc) from None


def _adapt(value: Any) -> Any:
    if isinstance(value, JsonArg):
        return None if value.value is None else Jsonb(value.value)
    return value
