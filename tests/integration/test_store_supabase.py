"""SupabaseStore's own rules over the PostgREST stand-in: retries only where safe, auth, errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fleet.models import WorkerState
from store.base import DatabaseUnavailable, NewTask, StoreError, TaskStatus
from store.supabase import SupabaseStore
from tests.support.postgrest_standin import PostgrestStandin


@pytest.fixture
def standin(database_url: str) -> Iterator[PostgrestStandin]:
    with PostgrestStandin(database_url) as running:
        yield running


@pytest.fixture
def sb(standin: PostgrestStandin) -> Iterator[SupabaseStore]:
    store = SupabaseStore(standin.url, standin.service_key, retries=3, backoff_base_s=0.01, timeout_s=2.0)
    try:
        yield store
    finally:
        store.close()


def _worker_with_task(sb: SupabaseStore) -> str:
    sb.insert_tasks([NewTask(task_type="t", user_id="u", id="task-1")])
    sb.create_worker("w", reason="test")
    sb.transition_worker("w", WorkerState.SPAWNING, WorkerState.ACTIVE, "test")
    return "w"


def test_standin_checks_both_auth_headers(standin: PostgrestStandin) -> None:
    url = f"{standin.url}/rest/v1/rpc/db_now"
    key = standin.service_key
    auth = {"apikey": key, "Authorization": f"Bearer {key}"}
    assert httpx.post(url, json={}, headers={**auth, "Content-Profile": "orchestrator"}).status_code == 200
    for headers in ({"apikey": key}, {"Authorization": f"Bearer {key}"}, {"apikey": key, "Authorization": "Bearer x"}):
        answer = httpx.post(url, json={}, headers=headers)
        assert answer.status_code == 401
        assert set(answer.json()) == {"code", "message", "details", "hint"}


def test_standin_answers_sql_errors_in_postgrest_shape(standin: PostgrestStandin) -> None:
    key = standin.service_key
    headers = {"apikey": key, "Authorization": f"Bearer {key}", "Content-Profile": "orchestrator"}
    answer = httpx.post(
        f"{standin.url}/rest/v1/rpc/configure_queue",
        json={"p_per_user_limit": 0, "p_max_task_attempts": 3},
        headers=headers,
    )
    assert answer.status_code == 400 and answer.json()["code"] == "22023"
    missing = httpx.post(f"{standin.url}/rest/v1/rpc/no_such_function", json={}, headers=headers)
    assert missing.status_code == 404 and missing.json()["code"] == "PGRST202"


def test_wrong_key_is_a_clear_error(standin: PostgrestStandin) -> None:
    store = SupabaseStore(standin.url, "not-the-key-zzz", retries=3, backoff_base_s=0.01)
    with pytest.raises(StoreError, match="refused the key") as caught:
        store.now()
    assert "not-the-key-zzz" not in str(caught.value)
    assert "not-the-key-zzz" not in repr(store)
    assert standin.calls == []  # refused before any function ran, and not retried
    store.close()


@pytest.mark.parametrize("json_body", [False, True])
def test_safe_call_is_retried_after_503(standin: PostgrestStandin, sb: SupabaseStore, json_body: bool) -> None:
    _worker_with_task(sb)
    standin.fail_next(2, 503, json_body=json_body)
    assert sb.worker_heartbeat("w", {"vram_mb": 1}) == WorkerState.ACTIVE
    assert standin.calls[-3:] == ["worker_heartbeat"] * 3


def test_safe_write_retried_after_a_lost_answer_is_not_doubled(standin: PostgrestStandin, sb: SupabaseStore) -> None:
    standin.fail_next(1, 502, execute=True)  # the first insert ran, its answer was lost
    ids = sb.insert_tasks([NewTask(task_type="t", user_id="u", id="a"), NewTask(task_type="t", user_id="u", id="b")])
    assert ids == ["a", "b"] and len(sb.list_tasks()) == 2


def test_retries_are_bounded(standin: PostgrestStandin, sb: SupabaseStore) -> None:
    standin.fail_next(10, 503)
    with pytest.raises(DatabaseUnavailable, match=r"POST rpc/task_counts, 4 attempts\): HTTP 503") as caught:
        sb.task_counts()
    assert standin.service_key not in str(caught.value)
    assert standin.calls.count("task_counts") == 4


def test_claim_is_never_retried(standin: PostgrestStandin, sb: SupabaseStore) -> None:
    worker = _worker_with_task(sb)
    standin.fail_next(1, 503, execute=True)  # the claim happened, the answer was lost
    with pytest.raises(DatabaseUnavailable, match="not retried"):
        sb.claim_next_task(worker)
    assert standin.calls.count("claim_next_task") == 1
    task = sb.get_task("task-1")
    assert task is not None and task.status == TaskStatus.IN_PROGRESS and task.attempts == 1
    assert sb.claim_next_task(worker) is None  # nothing claimed twice


def test_slow_answer_times_out_and_claim_is_not_repeated(standin: PostgrestStandin) -> None:
    store = SupabaseStore(standin.url, standin.service_key, retries=3, backoff_base_s=0.01, timeout_s=0.3)
    try:
        worker = _worker_with_task(store)
        standin.set_delay(0.6)
        with pytest.raises(DatabaseUnavailable, match="timed out"):
            store.claim_next_task(worker)
        assert standin.calls.count("claim_next_task") == 1
        # A safe read times out, is retried, and succeeds once the answers are quick again.
        standin.set_delay(0.0)
        assert store.task_counts() == {TaskStatus.IN_PROGRESS: 1}
    finally:
        standin.set_delay(0.0)
        store.close()


def test_unreachable_supabase_names_the_url() -> None:
    store = SupabaseStore("http://127.0.0.1:9", "secret-key-zzz", retries=1, backoff_base_s=0.01, timeout_s=1.0)
    with pytest.raises(DatabaseUnavailable) as caught:
        store.now()
    message = str(caught.value)
    assert "http://127.0.0.1:9" in message and "2 attempts" in message and "secret-key-zzz" not in message
    store.close()


def test_no_notifications_over_rest(sb: SupabaseStore) -> None:
    assert sb.wait_for_task_change(0.01) is False
    assert sb.describe().startswith("supabase at http://127.0.0.1:")
