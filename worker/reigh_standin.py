"""A stand-in for the Reigh deployment's Headless-Wan2GP worker: a test double, not product.

The orchestrator's `reigh` profile must drive pods whose worker it cannot change. This double
behaves as that worker does towards the app's database (/work/shared/reigh-contract.md), and
no better:

- heartbeats every REIGH_HEARTBEAT_INTERVAL_S (default 20) from a thread of its own through
  `func_worker_heartbeat_with_logs(status_param 'active')`, shipping its buffered log lines;
- claims through `claim_next_task_service_role(p_worker_id, p_run_type 'gpu')` every
  REIGH_POLL_INTERVAL_S (default 10, the real worker's --poll-interval) when idle;
- "runs" a task by sleeping `params.duration_s` (default 1), then completes it as the app's
  `complete_task` does, or fails it as `update-task-status` does when `params.fail` is true;
  `params.exit_pod` true makes it `os._exit(137)` at once, as an OOM kill would;
- REIGH_REPORT_CRASHED=1: sends one heartbeat with status 'crashed' and exits (what the guardian
  process does when the worker died);
- never reads a drain signal, never looks at the status its row has; SIGTERM ends it at once.

`python -m worker.reigh_standin --supabase-url URL --supabase-access-token KEY --worker ID`: the
real worker's flags. With DATABASE_URL set it talks to Postgres directly (psycopg), else to
Supabase through supabase-py (`rpc`, and the `tasks` table endpoint for completion and failure,
where the real worker calls edge functions). Neither the key nor the database password is printed.
It runs until killed. Exit codes: 137 exit_pod, 2 bad arguments, 1 the database settings are unusable,
0 after REIGH_REPORT_CRASHED's beat; SIGTERM's default action otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

__all__ = ["main"]

log = logging.getLogger("reigh_standin")

OOM_EXIT_CODE = 137  # 128 + SIGKILL: how an OOM-killed worker process ends
_DESCRIPTION = "A stand-in for the Reigh deployment's Headless-Wan2GP worker (a test double)."
_MAX_BUFFERED_LINES = 1000  # log lines kept for the next heartbeat; lines beyond it are dropped


class Backend(Protocol):
    """The worker's four calls to the app's database, over one transport."""

    def heartbeat(self, worker_id: str, logs: list[dict[str, Any]], status: str) -> Any: ...
    def claim(self, worker_id: str) -> dict[str, Any] | None: ...
    def finish(self, task_id: str, status: str, output_location: str, error: str | None) -> None: ...
    def close(self) -> None: ...


class PostgresBackend:
    """Direct SQL over one autocommit connection (one backend per thread), reconnecting when it broke."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
        return self._conn

    def heartbeat(self, worker_id: str, logs: list[dict[str, Any]], status: str) -> Any:
        row = (
            self._connection()
            .execute(
                "SELECT public.func_worker_heartbeat_with_logs("
                "worker_id_param => %s, logs_param => %s, status_param => %s)",
                (worker_id, Jsonb(logs), status),
            )
            .fetchone()
        )
        return None if row is None else row[0]

    def claim(self, worker_id: str) -> dict[str, Any] | None:
        cur = self._connection().execute(
            "SELECT task_id, params, task_type, project_id, user_id"
            " FROM public.claim_next_task_service_role(p_worker_id => %s, p_run_type => 'gpu')",
            (worker_id,),
        )
        row = cur.fetchone()
        if row is None:
            return None
        return {"task_id": str(row[0]), "params": row[1], "task_type": row[2]}

    def finish(self, task_id: str, status: str, output_location: str, error: str | None) -> None:
        if status == "Complete":  # what complete_task sets
            self._connection().execute(
                "UPDATE public.tasks SET status = 'Complete', output_location = %s,"
                " generation_processed_at = now(), updated_at = now() WHERE id = %s",
                (output_location, task_id),
            )
        else:  # what update-task-status sets on failure
            self._connection().execute(
                "UPDATE public.tasks SET status = 'Failed', output_location = %s, error_message = %s,"
                " updated_at = now() WHERE id = %s",
                (output_location, error, task_id),
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class SupabaseBackend:
    """supabase-py with the service-role key: `rpc` for the functions, the table endpoint for the rest."""

    def __init__(self, url: str, key: str) -> None:
        import supabase

        options = supabase.ClientOptions(auto_refresh_token=False, persist_session=False)
        self._client = supabase.create_client(url, key, options)

    def heartbeat(self, worker_id: str, logs: list[dict[str, Any]], status: str) -> Any:
        args = {"worker_id_param": worker_id, "logs_param": logs, "status_param": status}
        return self._client.rpc("func_worker_heartbeat_with_logs", args).execute().data

    def claim(self, worker_id: str) -> dict[str, Any] | None:
        data: Any = (
            self._client.rpc("claim_next_task_service_role", {"p_worker_id": worker_id, "p_run_type": "gpu"})
            .execute()
            .data
        )
        rows = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        if not rows:
            return None
        return {"task_id": str(rows[0]["task_id"]), "params": rows[0]["params"], "task_type": rows[0]["task_type"]}

    def finish(self, task_id: str, status: str, output_location: str, error: str | None) -> None:
        now = datetime.now(UTC).isoformat()
        values: dict[str, Any] = {"status": status, "output_location": output_location, "updated_at": now}
        if status == "Complete":
            values["generation_processed_at"] = now
        else:
            values["error_message"] = error
        self._client.table("tasks").update(values).eq("id", task_id).execute()

    def close(self) -> None:
        pass


class _BufferHandler(logging.Handler):
    """Keeps this process's log lines for the next heartbeat's `logs_param` (never blocks)."""

    def __init__(self, lines: queue.Queue[dict[str, Any]], secrets: Sequence[str]) -> None:
        super().__init__()
        self._lines = lines
        self._secrets = secrets

    def emit(self, record: logging.LogRecord) -> None:
        line = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "message": _redact(record.getMessage(), self._secrets),
            "task_id": getattr(record, "task_id", None),
        }
        with contextlib.suppress(queue.Full):  # the database is away: later lines are dropped, never waited for
            self._lines.put_nowait(line)


def _drain(lines: queue.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    batch: list[dict[str, Any]] = []
    while True:
        try:
            batch.append(lines.get_nowait())
        except queue.Empty:
            return batch


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _heartbeat_loop(
    make_backend: Callable[[], Backend],
    worker_id: str,
    interval_s: float,
    lines: queue.Queue[dict[str, Any]],
    first_beat: threading.Event,
    secrets: Sequence[str],
) -> None:
    backend = make_backend()
    while True:
        try:
            backend.heartbeat(worker_id, _drain(lines), "active")
            first_beat.set()
        except Exception as exc:  # keep beating: the database may come back
            log.warning("heartbeat failed: %s", _redact(f"{type(exc).__name__}: {exc}", secrets))
            backend.close()
        time.sleep(interval_s)


def _run_task(backend: Backend, worker_id: str, task: dict[str, Any]) -> None:
    task_id = task["task_id"]
    params = task["params"] if isinstance(task["params"], dict) else {}
    log.info("claimed task %s (%s)", task_id, task["task_type"], extra={"task_id": task_id})
    if params.get("exit_pod"):
        print(f"reigh-standin {worker_id}: task {task_id} asks for exit_pod: exiting 137", file=sys.stderr, flush=True)
        os._exit(OOM_EXIT_CODE)
    time.sleep(float(params.get("duration_s", 1.0)))
    if params.get("fail"):
        error = f"stand-in failure requested by params.fail (worker {worker_id})"
        backend.finish(task_id, "Failed", error, error)
        log.info("failed task %s", task_id, extra={"task_id": task_id})
    else:
        backend.finish(task_id, "Complete", f"https://example.invalid/reigh-standin/{task_id}.mp4", None)
        log.info("completed task %s", task_id, extra={"task_id": task_id})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.reigh_standin", description=_DESCRIPTION)
    parser.add_argument("--supabase-url", default=os.environ.get("SUPABASE_URL"))
    parser.add_argument("--supabase-access-token", default=os.environ.get("SUPABASE_SERVICE_ROLE_KEY"))
    parser.add_argument("--worker", default=os.environ.get("WORKER_ID"))
    args = parser.parse_args(argv)
    if not args.worker:
        parser.error("--worker (or WORKER_ID) is required")
    database_url = os.environ.get("DATABASE_URL") or ""
    if not database_url and not (args.supabase_url and args.supabase_access_token):
        parser.error("set DATABASE_URL, or give --supabase-url and --supabase-access-token")
    worker_id: str = args.worker
    secrets = [s for s in (args.supabase_access_token, _password(database_url), database_url) if s]

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a pod being terminated: gone at once, nothing handed back
    log_format = f"%(asctime)s %(levelname)s reigh-standin[{worker_id}] %(message)s"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the shipped logs
    lines: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=_MAX_BUFFERED_LINES)
    logging.getLogger().addHandler(_BufferHandler(lines, secrets))

    def make_backend() -> Backend:
        if database_url:
            return PostgresBackend(database_url)
        return SupabaseBackend(args.supabase_url, args.supabase_access_token)

    transport = "postgres (DATABASE_URL)" if database_url else f"supabase at {args.supabase_url}"
    try:
        backend = make_backend()  # a bad URL fails here, before any thread is waited for
        if os.environ.get("REIGH_REPORT_CRASHED") == "1":
            answer = backend.heartbeat(worker_id, [], "crashed")
            log.info("reported crashed via %s: %s", transport, answer)
            return 0
    except Exception as exc:
        log.error("cannot use %s: %s", transport, _redact(f"{type(exc).__name__}: {exc}", secrets))
        return 1

    interval_s = float(os.environ.get("REIGH_HEARTBEAT_INTERVAL_S") or 20.0)
    poll_s = float(os.environ.get("REIGH_POLL_INTERVAL_S") or 10.0)
    log.info("starting via %s: heartbeat every %.1fs, claim poll %.1fs", transport, interval_s, poll_s)
    first_beat = threading.Event()
    threading.Thread(
        target=_heartbeat_loop,
        args=(make_backend, worker_id, interval_s, lines, first_beat, secrets),
        name="reigh-heartbeat",
        daemon=True,
    ).start()
    first_beat.wait()  # the first beat creates the workers row that tasks.worker_id references
    while True:
        try:
            task = backend.claim(worker_id)
            if task is not None:
                _run_task(backend, worker_id, task)
                continue
        except Exception as exc:  # the real worker logs and polls on
            log.error("claim or task update failed: %s", _redact(f"{type(exc).__name__}: {exc}", secrets))
            backend.close()
        time.sleep(poll_s)


def _password(conninfo: str) -> str | None:
    if not conninfo:
        return None
    try:
        password = psycopg.conninfo.conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        return None
    return None if password is None else str(password)


if __name__ == "__main__":
    sys.exit(main())
