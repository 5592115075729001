"""Multi-node Ray clusters of their own: not the test session's one local Ray (tests/conftest.py).

These tests start `ray.cluster_utils.Cluster`s (a head and worker nodes as local processes) and a
fake-autoscaled cluster, so they cannot share a process with the session's `ray.init`. They are
collected only when the marker expression names them: `make test` runs them in a second pytest
invocation, `pytest -m multinode tests/multinode`.

Everything a cluster starts is stopped by its own handles, and then every process whose command
line names the cluster's own temp dir is killed: never `ray stop`, which would end every Ray on
this machine (other test sessions' too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "multinode: starts multi-node Ray clusters of its own (tests/multinode)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip this folder unless asked for (`-m multinode`): one Ray per process."""
    if "multinode" in (config.getoption("markexpr") or ""):
        return None
    return True


def kill_processes_of(*marks: str) -> int:
    """SIGKILL every process whose command line names one of `marks` (this cluster's temp dir or
    session name, no other cluster's)."""
    import psutil

    killed = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            if any(mark in arg for arg in proc.info["cmdline"] or () for mark in marks):
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return killed


@contextlib.contextmanager
def cluster_temp_dir(prefix: str) -> Iterator[Path]:
    """A short temp dir for one cluster (Ray's socket paths must stay under ~100 characters)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        kill_processes_of(str(path))
        shutil.rmtree(path, ignore_errors=True)
