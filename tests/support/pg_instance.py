"""A dedicated, real Postgres server that a fault test may stop, kill and start again.

Not the session's server (tests/conftest.py `pg_server_url`): stopping that one would break every
other test. The data directory is a fresh `mkdtemp` under /tmp, not under pytest's tmp tree, which is
0700 while Postgres runs as user `pgserver` when we are root. pgserver does the first start
(initdb, the `pgserver` user, permissions); `stop`/`kill`/`start` then drive the same data
directory with pg_ctl, so the server comes back on the same Unix socket and the clients' conninfo
stays valid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import warnings
from pathlib import Path

import psycopg

__all__ = ["DedicatedPostgres"]


class DedicatedPostgres:
    def __init__(self, prefix: str = "orchestrator-test-pg-fault-") -> None:
        self.pgdata = Path(tempfile.mkdtemp(prefix=prefix))
        self.url = ""
        self._socket_dir: str | None = None
        self._user = "pgserver" if os.geteuid() == 0 else None  # as pgserver runs it under root

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> str:
        """Start the server (initdb on the first call); returns its conninfo (Unix socket)."""
        if not self.url:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
                import pgserver

                server = pgserver.get_server(self.pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
            self.url = str(server.get_uri())
            self._socket_dir = str(psycopg.conninfo.conninfo_to_dict(self.url)["host"])
            # fsync off: a killed *process* loses nothing the OS already has. synchronous_commit
            # stays on (unlike the session's server): with it off, a SIGKILLed postmaster forgets
            # commits it already acknowledged, and a fault test would blame the client for it.
            # ALTER SYSTEM survives restarts.
            with psycopg.connect(self.url, autocommit=True) as conn:
                for setting in ("fsync", "full_page_writes"):
                    conn.execute(f"ALTER SYSTEM SET {setting} = off")
                conn.execute("SELECT pg_reload_conf()")
            return self.url
        self._pg_ctl(
            ["-w", "-t", "30", "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self.pgdata / "log"), "start"]
        )
        return self.url

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m <mode>`: the server refuses new connections and ends the open ones."""
        self._pg_ctl(["-w", "-t", "30", "-m", mode, "stop"])

    def kill(self) -> int:
        """SIGKILL the postmaster and its backends (a crash); returns its pid. start() runs crash recovery.

        The backends are killed too: orphans keep the shared memory attached and a new postmaster
        refuses to start until they have gone.
        """
        import psutil

        pid = self.postmaster_pid()
        assert pid is not None, "no postmaster is running"
        postmaster = psutil.Process(pid)
        children = postmaster.children(recursive=True)
        for proc in [postmaster, *children]:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs([postmaster, *children], timeout=10)
        return pid

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        import psutil

        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def accepts_connections(self) -> bool:
        try:
            psycopg.connect(self.url, connect_timeout=1).close()
        except psycopg.Error:
            return False
        return True

    def cleanup(self) -> None:
        """Stop the server (immediately) if it runs, then remove the data directory."""
        if self.is_running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        pid = self.postmaster_pid()
        if pid is not None and self.is_running():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        shutil.rmtree(self.pgdata, ignore_errors=True)

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(args, pgdata=self.pgdata, user=self._user, timeout=60)
