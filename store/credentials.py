"""A worker's own credential, in the form its pod receives it (README: "What a worker's credential may do").

The database makes and records the credential (`Store.issue_worker_credential`,
store/migrations/0005_worker_credentials.sql); this module only dresses it for the pod:

- a LOGIN credential becomes the orchestrator's own connection string with the worker's role and
  password in place of its own (`login_conninfo`): same host, port, database and options;
- a TOKEN credential becomes a JWT (`worker_token`) signed HS256 with the Supabase project's JWT
  secret, as PostgREST verifies it: role `orchestrator_worker`, the `worker_id` the worker functions
  check, and the `jti` the database recorded (the database refuses a token whose worker was
  revoked). Its times are the recorded ones, so the same credential always gives the same token.

Nothing here logs, and no value made here is ever put in an error message.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import jwt
from psycopg import conninfo as pg_conninfo

from store.base import StoreError, WorkerCredential, WorkerCredentialKind

__all__ = ["TOKEN_ISSUER", "WORKER_ROLE", "login_conninfo", "worker_token"]

WORKER_ROLE = "orchestrator_worker"  # the group role of every worker (a JWT's `role` claim)
TOKEN_ISSUER = "gpu-orchestrator"


def login_conninfo(conninfo: str, credential: WorkerCredential) -> str:
    """`conninfo` (a URL or key=value string) with the worker's role and password as user and password."""
    if credential.kind is not WorkerCredentialKind.LOGIN or not credential.role_name or credential.password is None:
        raise StoreError(f"worker {credential.worker_id}: no login credential to connect with")
    user, password = credential.role_name, credential.password.get_secret_value()
    if conninfo.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(conninfo)
        hosts = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{hosts}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    params = pg_conninfo.conninfo_to_dict(conninfo)
    params.update(user=user, password=password)
    return pg_conninfo.make_conninfo("", **params)


def worker_token(credential: WorkerCredential, jwt_secret: str) -> str:
    """The worker's JWT for Supabase's REST API (HS256 with the project's JWT secret)."""
    if credential.kind is not WorkerCredentialKind.TOKEN or not credential.token_id:
        raise StoreError(f"worker {credential.worker_id}: no token credential to sign")
    claims = {
        "role": WORKER_ROLE,
        "worker_id": credential.worker_id,
        "jti": credential.token_id,
        "iss": TOKEN_ISSUER,
        "iat": int(credential.issued_at.timestamp()),
        "exp": int(credential.expires_at.timestamp()),
    }
    return jwt.encode(claims, jwt_secret, algorithm="HS256")
