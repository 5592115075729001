"""The embedded Postgres (pgserver) used when neither a database URL nor Supabase is configured.

The server is started with `cleanup_mode=None`, so it outlives the process that started it and is
shared by every process (orchestrator, Ray actors, local workers) that uses the same data
directory; pgserver serialises the start with a file lock, and a second call finds it running.
It listens on a Unix socket only. Start takes about a second; a running one is found at once.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from pathlib import Path

from store.base import DatabaseUnavailable

__all__ = ["ensure_embedded", "stop_embedded"]

_log = logging.getLogger(__name__)


def ensure_embedded(pgdata: Path) -> str:
    """Start (or find running) the embedded Postgres in `pgdata`; returns its conninfo."""
    pgdata = Path(pgdata).expanduser().resolve()
    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then uses /tmp.
            warnings.simplefilter("ignore")
            import pgserver

            server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        return str(server.get_uri())
    except Exception as exc:  # pgserver raises CalledProcessError, OSError, AssertionError...
        log_file = pgdata / "log"
        raise DatabaseUnavailable(
            f"embedded postgres in {pgdata} did not start ({type(exc).__name__}: {exc}); see {log_file}"
        ) from None


def stop_embedded(pgdata: Path) -> bool:
    """Stop the embedded server of `pgdata` if one runs there; True when one was stopped."""
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    pgdata = Path(pgdata).expanduser().resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "pgserver" if os.geteuid() == 0 else None  # pgserver runs postgres as this user under root
    try:
        pg_ctl(["-w", "stop"], pgdata=pgdata, user=user)
    except subprocess.CalledProcessError as exc:
        _log.warning("embedded postgres in %s did not stop cleanly: %s", pgdata, exc)
        return False
    return True
