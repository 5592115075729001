"""Least privilege for pods: a worker's own credential does its own work and nothing else.

Every check runs with the credential exactly as a pod gets it (the DATABASE_URL that
`actors.lifecycle.pod_credentials` builds, or the JWT it signs), against the real migrated
database. Roles are cluster-wide: each test's roles carry its database's hash and are dropped at the
end (the session's server is shared). Destructive attempts run in a transaction that is rolled back.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from psycopg import sql

from actors import lifecycle
from actors.scaler import Scaler
from cloud.base import InvalidSpec
from config.settings import OrchestratorSettings, WorkerCredentials
from fleet.models import WorkerState
from store import credentials
from store.base import LogRecord, NewTask, RetentionTarget, StoreError, WorkerCredentialKind
from store.postgres import PostgresStore
from store.supabase import SupabaseStore
from tests.support.fleet_harness import fast_settings
from tests.support.polling import wait_for
from tests.support.postgrest_standin import TEST_JWT_SECRET, PostgrestStandin

WORKER_A = "gpu-20261201_060000-aaaaaaaa"
WORKER_B = "gpu-20261201_060000-bbbbbbbb"
PRIVATE_TABLES = ("tasks", "workers", "scaling_decisions", "orchestrator_leases", "worker_credentials", "system_logs")


# --- fixtures and helpers ---------------------------------------------------------------------------


def _drop_roles_of(database_url: str) -> None:
    """Roles are cluster-wide: drop whatever this test's database made (its prefix)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        prefix = conn.execute("SELECT orchestrator.worker_role_prefix()").fetchone()
        assert prefix is not None
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", prefix)]
        for role in roles:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))  # its grants here
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def orchestrator(database_url: str) -> Iterator[PostgresStore]:
    """The orchestrator's own store (its own, superuser, connection)."""
    store = PostgresStore(database_url, min_size=1, max_size=3)
    try:
        yield store
    finally:
        store.close()
        _drop_roles_of(database_url)


def _active_worker(store: Any, worker_id: str) -> None:
    store.create_worker(worker_id, reason="scale_up: test")
    assert store.transition_worker(worker_id, WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: test")


def _task(store: Any, user: str = "u1") -> str:
    return store.insert_tasks([NewTask(task_type="t", user_id=user, params={"p": 1})])[0]


def _pod_conninfo(store: PostgresStore, database_url: str, worker_id: str) -> str:
    issued = store.issue_worker_credential(worker_id, WorkerCredentialKind.LOGIN, 3600)
    return credentials.login_conninfo(database_url, issued)


def _log(me: str, **overrides: Any) -> dict[str, Any]:
    record = {
        "id": uuid.uuid4().hex,
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "level": "INFO",
        "source_type": "worker",
        "source_id": me,
        "worker_id": me,
        "message": "hello",
    }
    record.update(overrides)
    return record


def _refused(conn: psycopg.Connection[Any], statement: str, params: tuple[Any, ...] = ()) -> str:
    """Run `statement` in a transaction that is rolled back whatever happens; return the refusal."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement.encode(), params)
    except psycopg.errors.InsufficientPrivilege as exc:
        return str(exc)
    raise AssertionError(f"not refused: {statement}")


# --- direct Postgres: a login role per worker ---------------------------------------------------------


def test_a_pods_login_role_does_its_own_work_and_nothing_else(orchestrator: PostgresStore, database_url: str) -> None:
    _active_worker(orchestrator, WORKER_A)
    _active_worker(orchestrator, WORKER_B)
    held_by_b = _task(orchestrator, "u1")
    claimed = orchestrator.claim_next_task(WORKER_B)  # the orchestrator acts for anyone: unchanged
    assert claimed is not None and claimed.id == held_by_b
    mine = _task(orchestrator, "u2")
    pod_url = _pod_conninfo(orchestrator, database_url, WORKER_A)
    role = psycopg.conninfo.conninfo_to_dict(pod_url)["user"]
    assert role != psycopg.conninfo.conninfo_to_dict(database_url).get("user")

    with psycopg.connect(pod_url) as pod:
        assert pod.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("30s",)
        pod.rollback()
        for table in PRIVATE_TABLES:
            assert "permission denied" in _refused(pod, f"SELECT * FROM orchestrator.{table} LIMIT 1")
        assert "only as itself" in _refused(pod, "SELECT orchestrator.claim_next_task(%s)", (WORKER_B,))
        assert "only as itself" in _refused(pod, "SELECT orchestrator.worker_heartbeat(%s)", (WORKER_B,))
        statement = "SELECT orchestrator.worker_task_status(%s, %s)"
        assert "only as itself" in _refused(pod, statement, (held_by_b, WORKER_B))
        assert "only as itself" in _refused(pod, "SELECT orchestrator.worker_held_tasks(%s)", (WORKER_B,))
        assert "permission denied" in _refused(pod, "SELECT orchestrator.get_task(%s)", (held_by_b,))
        for fn in ("complete_task", "fail_task"):
            args = (held_by_b, WORKER_B) if fn == "complete_task" else (held_by_b, WORKER_B, "x")
            holes = ", ".join(["%s"] * len(args))
            assert "only as itself" in _refused(pod, f"SELECT orchestrator.{fn}({holes})", args)
        for statement in (
            "DROP TABLE orchestrator.tasks",
            "TRUNCATE orchestrator.tasks",
            "UPDATE orchestrator.tasks SET status = 'Queued'",
            "DELETE FROM orchestrator.workers",
            "SELECT orchestrator.list_tasks()",
            "SELECT orchestrator.requeue_worker_tasks('" + WORKER_B + "')",
            "SELECT orchestrator.issue_worker_credential('" + WORKER_B + "', 'login', 60)",
            "CREATE TABLE orchestrator.mine (x int)",
        ):
            _refused(pod, statement)
        for record in (_log(WORKER_B), _log(WORKER_A, source_type="orchestrator"), _log(WORKER_A, worker_id=WORKER_B)):
            statement = "SELECT orchestrator.insert_system_logs(%s::jsonb)"
            assert "own log records" in _refused(pod, statement, (psycopg.types.json.Jsonb([record]),))

    # Its own work, through the store a pod opens from its DATABASE_URL.
    worker = PostgresStore(pod_url, min_size=1, max_size=2)
    try:
        assert worker.worker_heartbeat(WORKER_A, {"vram_total_mb": 1}) is WorkerState.ACTIVE
        task = worker.claim_next_task(WORKER_A)
        assert task is not None and task.id == mine
        assert worker.complete_task(held_by_b, WORKER_A) is False  # not its task: nothing happens
        assert worker.fail_task(held_by_b, WORKER_A, "x") is None
        assert worker.worker_task_status(held_by_b, WORKER_A) is None  # not its task: not even its status
        assert [t.id for t in worker.worker_held_tasks(WORKER_A)] == [mine]  # B's task is not listed
        assert worker.complete_task(mine, WORKER_A, {"ok": True}) is True
        assert worker.worker_task_status(mine, WORKER_A) == "Complete"  # a lost answer, asked after
        again = worker.claim_next_task(WORKER_A)
        assert again is None  # B's task is In Progress, nothing else queued
        result = worker.insert_system_logs([LogRecord.model_validate(_log(WORKER_A))])
        assert result.inserted == 1
    finally:
        worker.close()
    held = orchestrator.get_task(held_by_b)
    assert held is not None and held.status == "In Progress" and held.worker_id == WORKER_B
    done = orchestrator.get_task(mine)
    assert done is not None and done.status == "Complete" and done.worker_id == WORKER_A


def test_termination_revokes_the_login_role(orchestrator: PostgresStore, database_url: str) -> None:
    _active_worker(orchestrator, WORKER_A)
    pod_url = _pod_conninfo(orchestrator, database_url, WORKER_A)
    open_session = psycopg.connect(pod_url, autocommit=True)
    try:
        assert open_session.execute("SELECT orchestrator.worker_heartbeat(%s)", (WORKER_A,)).fetchone() == ("active",)
        assert orchestrator.transition_worker(WORKER_A, None, WorkerState.TERMINATED, "terminated: test")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pod_url, connect_timeout=5).close()

        def session_ended() -> bool:
            try:
                open_session.execute("SELECT 1")
            except psycopg.Error:
                return True
            return False

        wait_for(session_ended, 10, "the worker's open session to be ended")
    finally:
        open_session.close()
    with pytest.raises(StoreError, match="terminated"):
        orchestrator.issue_worker_credential(WORKER_A, WorkerCredentialKind.LOGIN, 60)


def test_retention_of_a_terminated_workers_row_takes_its_revoked_credential_along(
    orchestrator: PostgresStore, database_url: str
) -> None:
    worker_c = "gpu-20261201_060000-cccccccc"
    for worker_id in (WORKER_A, WORKER_B, worker_c):
        _active_worker(orchestrator, worker_id)
    orchestrator.issue_worker_credential(WORKER_A, WorkerCredentialKind.LOGIN, 3600)
    orchestrator.issue_worker_credential(WORKER_B, WorkerCredentialKind.TOKEN, 3600)
    orchestrator.issue_worker_credential(worker_c, WorkerCredentialKind.LOGIN, 3600)
    for worker_id in (WORKER_A, WORKER_B, worker_c):
        assert orchestrator.transition_worker(worker_id, None, WorkerState.TERMINATED, "terminated: test")
    with psycopg.connect(database_url, autocommit=True) as conn:
        # worker C's role drop failed: reap still needs its row to drop the role
        conn.execute(
            "UPDATE orchestrator.worker_credentials SET role_dropped_at = NULL WHERE worker_id = %s", (worker_c,)
        )
        conn.execute("UPDATE orchestrator.workers SET terminated_at = now() - interval '2 hours'")
    assert orchestrator.apply_retention(RetentionTarget.WORKERS, 3600.0) == 3
    with psycopg.connect(database_url) as conn:
        kept = [r[0] for r in conn.execute("SELECT worker_id FROM orchestrator.worker_credentials ORDER BY 1")]
    assert kept == [worker_c]


def test_one_credential_per_pod_its_password_forgotten_once_promoted(
    orchestrator: PostgresStore, database_url: str
) -> None:
    orchestrator.create_worker(WORKER_A, reason="scale_up: test")
    first = orchestrator.issue_worker_credential(WORKER_A, WorkerCredentialKind.LOGIN, 3600)
    second = orchestrator.issue_worker_credential(WORKER_A, WorkerCredentialKind.LOGIN, 3600)
    assert first.password is not None and second.password is not None
    secret = first.password.get_secret_value()
    assert second.password.get_secret_value() == secret  # the Scaler's and the lifecycle's create: one pod
    assert len(secret) >= 32 and secret not in repr(first) and secret not in str(first.model_dump())
    assert first.role_name is not None and first.role_name.startswith("orchestrator_w_")
    assert first.expires_at - first.issued_at == dt.timedelta(hours=1)
    assert orchestrator.transition_worker(WORKER_A, WorkerState.SPAWNING, WorkerState.ACTIVE, "promoted: test")
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT password FROM orchestrator.worker_credentials WHERE worker_id = %s", (WORKER_A,)
        ).fetchone() == (None,)
    with pytest.raises(StoreError, match="already has a login credential"):
        orchestrator.issue_worker_credential(WORKER_A, WorkerCredentialKind.TOKEN, 60)
    with pytest.raises(StoreError, match="no worker"):
        orchestrator.issue_worker_credential("gpu-nobody", WorkerCredentialKind.LOGIN, 60)
    assert orchestrator.revoke_worker_credential(WORKER_A, "revoked: test") is True
    assert orchestrator.revoke_worker_credential("gpu-nobody", "revoked: test") is False
    with pytest.raises(StoreError, match="revoked"):
        orchestrator.issue_worker_credential(WORKER_A, WorkerCredentialKind.LOGIN, 60)


class _NoLifecycles:
    def __len__(self) -> int:
        return 0

    def ensure(self, worker_id: str) -> None: ...

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None: ...

    def keep_only(self, worker_ids: set[str]) -> None: ...


def test_reconcile_reaps_what_a_crash_left_behind(
    orchestrator: PostgresStore, database_url: str, tmp_path: Path
) -> None:
    _active_worker(orchestrator, WORKER_A)
    _active_worker(orchestrator, WORKER_B)
    url_a = _pod_conninfo(orchestrator, database_url, WORKER_A)
    url_b = _pod_conninfo(orchestrator, database_url, WORKER_B)
    with psycopg.connect(database_url, autocommit=True) as admin:
        prefix = admin.execute("SELECT orchestrator.worker_role_prefix()").fetchone()
        assert prefix is not None
        stray = f"{prefix[0]}stray"
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(stray)))
        # A crash: B terminated with the revoking trigger out of the way, A's row gone altogether.
        admin.execute("ALTER TABLE orchestrator.workers DISABLE TRIGGER workers_credentials")
        admin.execute("UPDATE orchestrator.workers SET status = 'terminated' WHERE id = %s", (WORKER_B,))
        admin.execute("ALTER TABLE orchestrator.workers ENABLE TRIGGER workers_credentials")
        admin.execute("DELETE FROM orchestrator.workers WHERE id = %s", (WORKER_A,))
    psycopg.connect(url_a).close()  # both still connect: nothing revoked them yet
    psycopg.connect(url_b).close()
    # One Scaler cycle reconciles: its act phase reaps them.
    scaler = Scaler(
        fast_settings(database_url, tmp_path), holder="test/scaler", lifecycles=_NoLifecycles(), start=False
    )
    try:
        report = scaler.step()
    finally:
        scaler.stop()
    assert "act" not in report["phase_errors"], report["phase_errors"]
    for url in (url_a, url_b):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=5).close()
    with psycopg.connect(database_url) as admin:
        reasons = admin.execute(
            "SELECT worker_id, revoke_reason FROM orchestrator.worker_credentials ORDER BY worker_id"
        ).fetchall()
        assert reasons == [(WORKER_A, "reaped: worker row gone"), (WORKER_B, "reaped: worker terminated")]
        left = admin.execute("SELECT count(*) FROM pg_roles WHERE starts_with(rolname, %s)", prefix).fetchone()
        assert left == (0,), f"{stray} and the workers' roles are dropped"
    assert orchestrator.reap_worker_credentials().model_dump() == {"revoked": [], "dropped_roles": []}


def test_without_createrole_provisioning_names_the_missing_privilege(
    orchestrator: PostgresStore, database_url: str, tmp_path: Path
) -> None:
    orchestrator.create_worker(WORKER_A, reason="scale_up: test")
    with psycopg.connect(database_url, autocommit=True) as admin:
        prefix = admin.execute("SELECT orchestrator.worker_role_prefix()").fetchone()
        assert prefix is not None
        low = f"{prefix[0]}lowpriv"  # dropped with the test's roles
        # Like an orchestrator role that owns the tables (RLS does not stop it), without CREATEROLE.
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEROLE BYPASSRLS").format(sql.Identifier(low)))
        for grant in (
            "GRANT USAGE ON SCHEMA orchestrator TO {}",
            "GRANT ALL ON ALL TABLES IN SCHEMA orchestrator TO {}",
            "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA orchestrator TO {}",
        ):
            admin.execute(sql.SQL(grant).format(sql.Identifier(low)))
    low_url = psycopg.conninfo.make_conninfo(database_url, user=low)
    settings = OrchestratorSettings(database={"backend": "postgres", "url": low_url}, state_dir=tmp_path)
    store = PostgresStore(low_url, min_size=1, max_size=1)
    try:
        with pytest.raises(InvalidSpec, match="CREATEROLE") as refused:
            lifecycle.pod_credentials(settings, store, WORKER_A)
        assert "worker_credentials: shared" in str(refused.value)
        shared = settings.model_copy(
            update={"database": settings.database.model_copy(update={"worker_credentials": WorkerCredentials.SHARED})}
        )
        assert lifecycle.pod_credentials(shared, store, WORKER_A).database_url == low_url
    finally:
        store.close()


# --- Supabase REST: a JWT per worker ------------------------------------------------------------------


def _token(claims: dict[str, Any], secret: str = TEST_JWT_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def test_a_pods_token_does_its_own_work_and_nothing_else(database_url: str) -> None:
    with PostgrestStandin(database_url) as standin:
        orchestrator = SupabaseStore(standin.url, standin.service_key, retries=0)
        opened: list[SupabaseStore] = []

        def worker_store(token: str) -> SupabaseStore:
            store = SupabaseStore.with_worker_token(standin.url, token, apikey=standin.anon_key, retries=0)
            opened.append(store)
            return store

        try:
            _active_worker(orchestrator, WORKER_A)
            _active_worker(orchestrator, WORKER_B)
            held_by_b = _task(orchestrator, "u1")
            assert orchestrator.claim_next_task(WORKER_B) is not None
            mine = _task(orchestrator, "u2")
            issued = orchestrator.issue_worker_credential(WORKER_A, WorkerCredentialKind.TOKEN, 3600)
            token = credentials.worker_token(issued, TEST_JWT_SECRET)
            assert (
                credentials.worker_token(
                    orchestrator.issue_worker_credential(WORKER_A, WorkerCredentialKind.TOKEN, 3600), TEST_JWT_SECRET
                )
                == token
            )  # one pod, one token
            worker = worker_store(token)
            assert worker.worker_heartbeat(WORKER_A) is WorkerState.ACTIVE
            task = worker.claim_next_task(WORKER_A)
            assert task is not None and task.id == mine
            assert worker.complete_task(mine, WORKER_A) is True
            assert worker.insert_system_logs([LogRecord.model_validate(_log(WORKER_A))]).inserted == 1
            refusals: list[Callable[[], object]] = [
                lambda: worker.worker_heartbeat(WORKER_B),
                lambda: worker.claim_next_task(WORKER_B),
                lambda: worker.complete_task(held_by_b, WORKER_B),
                lambda: worker.fail_task(held_by_b, WORKER_B, "x"),
                lambda: worker.insert_system_logs([LogRecord.model_validate(_log(WORKER_B))]),
                lambda: worker.list_tasks(),
                lambda: worker.get_task(held_by_b),
                lambda: worker.requeue_worker_tasks(WORKER_B),
                lambda: worker.list_workers(),
            ]
            for attempt in refusals:
                with pytest.raises(StoreError, match=r"permission denied.*only its own worker functions"):
                    attempt()
            held = orchestrator.get_task(held_by_b)
            assert held is not None and held.status == "In Progress" and held.worker_id == WORKER_B

            # Tokens PostgREST itself refuses: forged, expired, a role that does not exist, no jti of ours.
            now = int(dt.datetime.now(dt.UTC).timestamp())
            claims = {"role": "orchestrator_worker", "worker_id": WORKER_A, "jti": issued.token_id, "exp": now + 60}
            for bad, why in (
                (_token(claims, "another-secret-of-sufficient-length-000"), "refused the key.*SUPABASE_WORKER_TOKEN"),
                (_token({**claims, "exp": now - 60}), "refused the key"),
                (_token({**claims, "role": "no_such_role"}), "refused the key"),
                (_token({**claims, "jti": str(uuid.uuid4())}), "permission denied"),
                (_token({**claims, "worker_id": WORKER_B}), "permission denied"),
            ):
                with pytest.raises(StoreError, match=why):
                    worker_store(bad).worker_heartbeat(WORKER_A)

            # The role a worker's JWT names reads no table, as PostgREST would run `GET /rest/v1/tasks`.
            with psycopg.connect(database_url) as conn:
                for table in PRIVATE_TABLES:
                    with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction(force_rollback=True):
                        conn.execute("SET LOCAL ROLE orchestrator_worker")
                        conn.execute(sql.SQL("SELECT * FROM orchestrator.{} LIMIT 1").format(sql.Identifier(table)))

            # Terminated: the same token is refused from now on.
            assert orchestrator.transition_worker(WORKER_A, None, WorkerState.TERMINATED, "terminated: test")
            with pytest.raises(StoreError, match="revoked"):
                worker.worker_heartbeat(WORKER_A)
        finally:
            for store in opened:
                store.close()
            orchestrator.close()
