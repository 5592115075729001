"""Session-wide real parts: one embedded Postgres and (only when a test asks) one local Ray.

Each test that needs a database gets its own, cloned from a migrated template in ~0.1 s, so tests
never see each other's rows. Set TEST_DATABASE_URL to use an existing server instead of pgserver.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

TEMPLATE_DB = "orchestrator_template"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Pure unit tests first: they must run before the session's Ray starts (and fail fast)."""
    items.sort(key=lambda item: 0 if "tests/unit/" in str(item.path) else 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_dbname(url: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Conninfo of a real Postgres server (superuser) for the whole session."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    import pgserver

    # Not under pytest's tmp tree: that one is 0700 (Postgres runs as user `pgserver` when we are
    # root) and concurrent pytest sessions prune each other's numbered dirs.
    pgdata = Path(tempfile.mkdtemp(prefix="orchestrator-test-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    # A throwaway server: durability buys nothing here and commits dominate the tests' time.
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


def _fresh_template(pg_server_url: str, name: str) -> str:
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_dbname(pg_server_url, name)


def _clone(pg_server_url: str, template: str, prefix: str) -> str:
    """A fresh database of one test's own, cloned from `template`; returns its conninfo."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        # Tests read the orchestrator's tables with plain SQL; the product itself always qualifies
        # them (every function pins its own search_path), so this only spares the tests a prefix.
        conn.execute(f'ALTER DATABASE "{name}" SET search_path = orchestrator, public')
    return _with_dbname(pg_server_url, name)


@pytest.fixture(scope="session")
def pg_template(pg_server_url: str) -> str:
    """A database with every migration applied, used as the template of each test's database."""
    from store.migrate import apply_migrations

    template_url = _fresh_template(pg_server_url, TEMPLATE_DB)
    apply_migrations(template_url)
    return template_url


def create_database(pg_server_url: str, pg_template: str) -> str:
    """A fresh migrated database; returns its conninfo."""
    return _clone(pg_server_url, TEMPLATE_DB, "t")


REIGH_TEMPLATE_DB = "orchestrator_reigh_template"


@pytest.fixture(scope="session")
def reigh_template(pg_server_url: str) -> str:
    """A Reigh-shaped app database (store/reigh/app_fixture.sql) migrated in the `reigh` profile."""
    from store.migrate import apply_migrations
    from store.reigh.fixture import apply_app_fixture

    url = _fresh_template(pg_server_url, REIGH_TEMPLATE_DB)
    apply_app_fixture(url)
    apply_migrations(url, profile="reigh")
    return url


@pytest.fixture
def reigh_database_url(pg_server_url: str, reigh_template: str) -> str:
    """Conninfo of a fresh Reigh app database of this test's own, migrated in the `reigh` profile."""
    return _clone(pg_server_url, REIGH_TEMPLATE_DB, "r")


@pytest.fixture
def database_url(pg_server_url: str, pg_template: str) -> str:
    """Conninfo of a fresh, migrated database of this test's own."""
    return create_database(pg_server_url, pg_template)


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """One real local Ray for the whole test session, with the dashboard and a metrics port.

    Actors of this project ask for num_cpus=0, so two CPUs are plenty on a 2-core machine. The node
    advertises lifecycle slots (`ray.lifecycle_resource`, as ray_cluster.yaml's nodes do), so every
    WorkerLifecycle is placed the way it is in production; the multi-node tests (tests/multinode)
    start clusters of their own.
    """
    import ray

    metrics_port = free_port()
    context = ray.init(
        address="local",  # never attach to another cluster running on this machine
        num_cpus=2,
        resources={"orchestrator_lifecycle": 1000},
        namespace="gpu-orchestrator",
        include_dashboard=True,
        _metrics_export_port=metrics_port,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield {"context": context, "metrics_port": metrics_port, "tmp": Path(tmp_path_factory.mktemp("ray"))}
    finally:
        ray.shutdown()
