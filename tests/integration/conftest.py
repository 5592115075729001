"""Fixtures of the store tests: a store of each kind over the test's own migrated database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from store.postgres import PostgresStore
from store.rpc import RpcStore


@pytest.fixture
def pg_store(database_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(database_url, min_size=1, max_size=4)
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def store_of_kind(kind: str, database_url: str) -> Iterator[RpcStore]:
    """A store over `database_url`: direct Postgres, or Supabase REST through the loopback PostgREST."""
    if kind == "postgres":
        pg = PostgresStore(database_url, min_size=1, max_size=4)
        try:
            yield pg
        finally:
            pg.close()
        return
    from store.supabase import SupabaseStore
    from tests.support.postgrest_standin import PostgrestStandin

    with PostgrestStandin(database_url) as standin:
        sb = SupabaseStore(standin.url, standin.service_key, retries=2, backoff_base_s=0.01)
        try:
            yield sb
        finally:
            sb.close()


@pytest.fixture(params=["postgres", "supabase"])
def store(request: pytest.FixtureRequest, database_url: str) -> Iterator[RpcStore]:
    """The same contract, once per implementation."""
    with store_of_kind(request.param, database_url) as opened:
        yield opened


@pytest.fixture(params=["postgres", "supabase"])
def reigh_store(request: pytest.FixtureRequest, reigh_database_url: str) -> Iterator[RpcStore]:
    """The same, over a Reigh app database migrated in the reigh profile."""
    with store_of_kind(request.param, reigh_database_url) as opened:
        yield opened
