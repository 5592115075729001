"""What a pod's env carries, the credential forms (pure), and what `config check` warns about."""

from __future__ import annotations

import datetime as dt
from urllib.parse import unquote, urlsplit

import jwt
import psycopg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from cloud import spec
from cloud.base import InvalidSpec
from config.settings import OrchestratorSettings, WorkerCredentials
from orchestrator.cli import app
from orchestrator.configcheck import credential_warnings
from store import credentials
from store.base import StoreError, WorkerCredential, WorkerCredentialKind

WORKER = "gpu-20261201_062000-1234abcd"
PASSWORD = "p@ss:w/rd with spaces&=?"
ISSUED = dt.datetime(2026, 12, 1, 6, 20, tzinfo=dt.UTC)


def _login() -> WorkerCredential:
    return WorkerCredential(
        worker_id=WORKER,
        kind=WorkerCredentialKind.LOGIN,
        role_name="orchestrator_w_0a1b2c3d_" + WORKER,
        password=SecretStr(PASSWORD),
        issued_at=ISSUED,
        expires_at=ISSUED + dt.timedelta(days=30),
    )


def _supabase(**database: object) -> OrchestratorSettings:
    base: dict[str, object] = {
        "backend": "supabase",
        "supabase_url": "https://p.supabase.example",
        "supabase_service_role_key": "service-key-0000",
    }
    return OrchestratorSettings(database=base | database)


@pytest.mark.parametrize(
    "own",
    [
        "postgresql://orchestrator:own-secret@db.example:5432/app?sslmode=require",
        "host=db.example port=5432 dbname=app user=orchestrator password=own-secret sslmode=require",
        "postgresql://orchestrator:own-secret@/app?host=/tmp/socket",
    ],
)
def test_a_login_credential_replaces_user_and_password_and_keeps_the_rest(own: str) -> None:
    pod = credentials.login_conninfo(own, _login())
    params = psycopg.conninfo.conninfo_to_dict(pod)
    assert params["user"] == "orchestrator_w_0a1b2c3d_" + WORKER
    assert params["password"] == PASSWORD
    assert "own-secret" not in pod and "orchestrator:" not in pod
    mine = psycopg.conninfo.conninfo_to_dict(own)
    assert {k: v for k, v in params.items() if k not in ("user", "password")} == {
        k: v for k, v in mine.items() if k not in ("user", "password")
    }
    if own.startswith("postgresql://"):
        assert unquote(urlsplit(pod).password or "") == PASSWORD


def test_a_token_credential_signs_the_recorded_claims() -> None:
    token_cred = WorkerCredential(
        worker_id=WORKER,
        kind=WorkerCredentialKind.TOKEN,
        token_id="7d1e3a52-0f0e-4a3b-9c1d-2b9b8f0c1a11",
        issued_at=dt.datetime.now(dt.UTC),
        expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    secret = "a-project-jwt-secret-of-thirty-two-bytes-or-more"
    token = credentials.worker_token(token_cred, secret)
    assert token == credentials.worker_token(token_cred, secret)  # the same credential, the same token
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["role"] == "orchestrator_worker" and claims["worker_id"] == WORKER
    assert claims["jti"] == token_cred.token_id
    with pytest.raises(StoreError):
        credentials.worker_token(_login(), secret)
    with pytest.raises(StoreError):
        credentials.login_conninfo("host=x", token_cred)


def test_a_credential_never_shows_its_password() -> None:
    cred = _login()
    assert PASSWORD not in repr(cred) and PASSWORD not in str(cred) and PASSWORD not in str(cred.model_dump())


def test_native_supabase_pods_get_their_token_never_the_service_key() -> None:
    settings = _supabase(supabase_jwt_secret="jwt-secret-0000")
    settings = settings.model_copy(
        update={"queue": settings.queue.model_copy(update={"supabase_anon_key": SecretStr("anon-0000")})}
    )
    env = spec.pod_env(settings, WORKER, database_url=None, worker_token="the.worker.token")
    assert env["SUPABASE_WORKER_TOKEN"] == "the.worker.token" and env["SUPABASE_ANON_KEY"] == "anon-0000"
    assert "SUPABASE_SERVICE_ROLE_KEY" not in env and "service-key-0000" not in env.values()
    assert "jwt-secret-0000" not in env.values()
    assert (
        "SUPABASE_WORKER_TOKEN"
        in spec.pod_spec_for_worker(
            settings, WORKER, database_url=None, worker_token="the.worker.token"
        ).secret_env_keys
    )
    with pytest.raises(InvalidSpec, match="SUPABASE_JWT_SECRET"):
        spec.pod_env(settings, WORKER, database_url=None)
    shared = settings.model_copy(
        update={"database": settings.database.model_copy(update={"worker_credentials": WorkerCredentials.SHARED})}
    )
    assert spec.pod_env(shared, WORKER, database_url=None)["SUPABASE_SERVICE_ROLE_KEY"] == "service-key-0000"


def test_config_check_warns_about_what_pods_would_hold() -> None:
    assert credential_warnings(OrchestratorSettings()) == []
    (reigh,) = credential_warnings(OrchestratorSettings(queue={"profile": "reigh"}))
    assert "service-role key" in reigh and "Headless-Wan2GP" in reigh and "nothing else of its own" in reigh
    (shared,) = credential_warnings(OrchestratorSettings(database={"worker_credentials": "shared"}))
    assert "orchestrator's own database credential" in shared
    no_secret, no_anon = credential_warnings(_supabase())
    assert "SUPABASE_JWT_SECRET" in no_secret and "SUPABASE_ANON_KEY" in no_anon
    result = CliRunner().invoke(
        app, ["config", "check"], env={"ORCHESTRATOR_QUEUE__PROFILE": "reigh", "ORCHESTRATOR_ENV_FILE": "/dev/null"}
    )
    assert result.exit_code == 0, result.output
    assert "warning: queue.profile is reigh" in result.output
