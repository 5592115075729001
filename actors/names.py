"""Names a person finds in the Ray dashboard, shared by every process that looks actors up."""

from __future__ import annotations

SCALER_NAME = "scaler"
LOG_SHIPPER_NAME = "log-shipper"
STORE_GATEWAY_NAME = "store-gateway"
WORKER_ACTOR_PREFIX = "worker:"


def worker_actor_name(worker_id: str) -> str:
    return f"{WORKER_ACTOR_PREFIX}{worker_id}"
