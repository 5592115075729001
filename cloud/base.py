"""The pod provider contract, written down (after Ray autoscaler v2's ICloudInstanceProvider).

A provider is eventually consistent: a pod just created may not be listed yet, and a pod just
terminated may still be listed for a while. Every call is idempotent:

- `create(name, spec)`: if a pod named `name` already exists (any non-terminated status), it is
  returned and no second pod is created. The worker id is the pod name, so a crash between
  "row written" and "pod created" is repaired by calling `create` again. This holds only as far as
  the provider's list is consistent (and answers: RunPod creates anyway when it cannot look), so
  the Scaler's reconcile looks for a second pod with a live worker's name every cycle and
  terminates it (`fleet.supervision.reconcile`).
- `terminate(pod_id)`: "already gone" is success. Any other failure raises; it is never swallowed,
  so a pod that keeps running is never recorded as terminated.
- `get(pod_id)`: the pod, or raises `NotFound` when the provider does not know it (gone).
- `list(name_prefix)`: every non-terminated pod whose name starts with the prefix.
- `stop(pod_id)`: the pod stops and keeps its host and disk (the warm pool): its GPU is released and
  compute billing ends. Stopping a stopped pod is fine; a gone pod raises `NotFound`. The pod then
  shows `EXITED` (possibly after a short delay) and is still found by `get` and listed by `list`.
- `resume(pod_id)`: a stopped pod starts again on the same host, with the same name and env (so its
  worker comes back under the same id). `CapacityUnavailable` when the host has no free GPU for it
  any more (the caller gives the pod up and creates a new one), `NotFound` when it is gone; a pod
  that runs already is returned as it is.

Errors are typed so callers (and the fleet policy) can tell a capacity shortage from a bad key.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AuthFailed",
    "CapacityUnavailable",
    "InvalidSpec",
    "NotFound",
    "Pod",
    "PodSpec",
    "PodStatus",
    "Provider",
    "ProviderError",
    "RateLimited",
    "Transient",
    "UnknownGpuType",
]


class ProviderError(Exception):
    """Base of every provider failure. Messages never contain an API key or a secret env value."""

    retryable = False


class CapacityUnavailable(ProviderError):
    """No machine with this GPU type / volume / RAM tier right now: try the next preference."""


class RateLimited(ProviderError):
    """HTTP 429 or the provider's own throttling: retry after a backoff."""

    retryable = True


class Transient(ProviderError):
    """5xx, timeouts, dropped connections, malformed answers: retry after a backoff."""

    retryable = True


class AuthFailed(ProviderError):
    """The API key was refused. Retrying will not help."""


class InvalidSpec(ProviderError):
    """The provider refused the pod spec itself (unknown GPU type, bad image...)."""


class UnknownGpuType(InvalidSpec):
    """The provider does not know this GPU type id: a configuration error for that preference only."""


class NotFound(ProviderError):
    """The provider does not know this pod: it is gone."""


class PodStatus(StrEnum):
    PENDING = "pending"  # accepted, not running yet (created, pulling the image)
    RUNNING = "running"  # the container runs; the worker inside may still be booting
    EXITED = "exited"  # stopped, but the pod still exists (and may still bill for disk)
    TERMINATED = "terminated"  # gone
    UNKNOWN = "unknown"  # an answer we cannot map; treated as not running


class PodSpec(BaseModel):
    """What to create. `env` values may be secrets: they are never logged or put in `Pod.raw`."""

    model_config = ConfigDict(frozen=True)

    image: str
    gpu_types: list[str]
    gpu_count: int = 1
    cloud_type: str = "SECURE"
    container_disk_gb: int = 50
    volume_mount_path: str = "/workspace"
    network_volumes: list[str] = Field(default_factory=list)
    ram_tiers_gb: list[int] = Field(default_factory=list)
    min_vcpu: int = 1
    ports: str = ""
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    secret_env_keys: frozenset[str] = frozenset()  # env keys whose values are secrets
    # Shell command the pod runs instead of the image's (RunPod dockerArgs); `$VARS` are expanded in
    # the pod from `env`, so a secret is referenced, never spelled out here.
    start_command: str | None = None


class Pod(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    status: PodStatus
    gpu_type: str | None = None
    cost_per_hour: float | None = None
    ssh_endpoint: str | None = None  # "host:port" when a public SSH port is exposed
    network_volume: str | None = None
    ram_tier_gb: int | None = None
    raw: dict[str, Any] = Field(default_factory=dict)  # provider's answer, secrets removed


@runtime_checkable
class Provider(Protocol):
    """Where pods come from. See the module docstring for the idempotency rules."""

    name: str  # "runpod" or "local": shown in status output

    def create(self, name: str, spec: PodSpec) -> Pod: ...

    def get(self, pod_id: str) -> Pod: ...

    def list(self, name_prefix: str) -> list[Pod]: ...

    def terminate(self, pod_id: str) -> None: ...

    def stop(self, pod_id: str) -> None: ...

    def resume(self, pod_id: str) -> Pod: ...

    def close(self) -> None: ...
