"""RunPodProvider: real RunPod GPU pods through the `runpod` SDK. Every SDK call lives here.

Why the SDK is wrapped this tightly:

- The SDK reads its API key from the module global `runpod.api_key` (several calls take no
  `api_key=` argument) and its URL from `RUNPOD_API_BASE_URL` at call time. Both are process-wide,
  so each call sets them under one lock (`_sdk_session`) and restores them after.
- It reports only 401 (`AuthenticationError`) and GraphQL `errors` (`QueryError`, whose `.query`
  attribute holds the whole mutation, env values included). Everything else surfaces as a
  `requests` exception, a JSON decode error or a missing `data` key. `_translate` turns all of it
  into the typed errors of `cloud.base`, scrubbed of secrets and never chained to the SDK exception
  (so no traceback or pickled exception carries the mutation text).
- It pastes env values into a GraphQL string literal unescaped; `_gql_string` escapes them first,
  so a password with a quote cannot break (or inject into) the mutation.
- Its list of pods opens a connection per call (a TLS handshake against the real API) and decodes
  the whole answer up to three times; at 1,000 pods that is most of a Scaler cycle. The list (and
  the look-up by name) is therefore the SDK's own query posted here, on a kept-alive session per
  thread, decoded once; it raises what the SDK would, so `_translate` reads it the same way.

Stop and resume (the warm pool) are the SDK's `podStop` / `podResume`. A resume reads the pod
first: a gone pod is NotFound, a running one is returned as it is, and the mutation needs the
pod's own GPU count. A host whose GPUs were rented out meanwhile refuses the resume ("There are not
enough free GPUs on the host machine..."): CapacityUnavailable, not retried.

Capacity fallback order: GPU types vary fastest, then network volumes, then RAM tiers, i.e. every
GPU type is tried on the preferred volume and RAM tier before giving up a volume, and every volume
before giving up a RAM tier. The combination taken is recorded in the returned `Pod`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import requests
import runpod  # type: ignore[import-untyped]
import runpod.error  # type: ignore[import-untyped]
from runpod.api import ctl_commands  # type: ignore[import-untyped]
from runpod.api.queries import pods as pod_queries  # type: ignore[import-untyped]
from runpod.user_agent import USER_AGENT  # type: ignore[import-untyped]

from cloud.base import (
    AuthFailed,
    CapacityUnavailable,
    InvalidSpec,
    NotFound,
    Pod,
    PodSpec,
    PodStatus,
    ProviderError,
    RateLimited,
    Transient,
    UnknownGpuType,
)
from cloud.redact import Redactor
from cloud.retry import RetryPolicy, call_with_retries
from telemetry import metrics

__all__ = ["RunPodProvider", "classify_message", "map_status"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Named here because the class's `list` method shadows the builtin inside its body.
_Volumes = list[str]
_VolumeChoices = list[tuple[str, str, str | None]]  # (label as configured, volume id, data center id)

# The SDK's key and URL are process globals: one SDK call at a time per process.
_SDK_LOCK = threading.RLock()
_DEFAULT_API_URL = "https://api.runpod.io"  # the SDK's default for RUNPOD_API_BASE_URL
_HTTP_TIMEOUT_S = 30  # the SDK's

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,190}$")

# Message fragments of the real API's error answers, lower-cased, checked in this order.
_CAPACITY = (
    "no longer any instances available",  # "There are no longer any instances available with the requested..."
    "does not have the resources to deploy",
    "no instances available",
    "not enough free gpus",  # resume: "There are not enough free GPUs on the host machine to start this pod."
    "not enough capacity",
    "insufficient capacity",
)
_RATE = ("rate limit", "too many requests", "throttl")
_AUTH = ("unauthorized", "unauthenticated", "api key", "forbidden", "permission denied")
_NOT_FOUND = ("not found", "does not exist", "could not find", "no pod with")
_TRANSIENT = (
    "something went wrong",  # the API's generic 500: "Something went wrong. Please try again later..."
    "try again later",
    "internal server error",
    "internal_server_error",
    "timed out",
    "timeout",
    "temporarily unavailable",
    "service unavailable",
    "bad gateway",
)

_DESIRED_STATUS = {
    "CREATED": PodStatus.PENDING,
    "RESTARTING": PodStatus.PENDING,
    "RUNNING": PodStatus.RUNNING,
    "EXITED": PodStatus.EXITED,
    "PAUSED": PodStatus.EXITED,
    "DEAD": PodStatus.EXITED,
    "TERMINATED": PodStatus.TERMINATED,
}


def map_status(answer: dict[str, Any]) -> PodStatus:
    """RunPod's `desiredStatus` (+ `runtime`) as a PodStatus.

    `RUNNING` with no `runtime` yet means the container has not started (image pull): PENDING.
    """
    status = _DESIRED_STATUS.get(str(answer.get("desiredStatus") or "").upper(), PodStatus.UNKNOWN)
    if status is PodStatus.RUNNING and "runtime" in answer and not answer.get("runtime"):
        return PodStatus.PENDING
    return status


def classify_message(message: str, default: type[ProviderError] = ProviderError) -> type[ProviderError]:
    """The typed error for an API error message."""
    low = message.lower()
    for fragments, kind in (
        (_CAPACITY, CapacityUnavailable),
        (_RATE, RateLimited),
        (_AUTH, AuthFailed),
        (_NOT_FOUND, NotFound),
        (_TRANSIENT, Transient),
    ):
        if any(fragment in low for fragment in fragments):
            return kind
    return default


def _gql_string(value: str) -> str:
    """Escape a value the SDK will paste between double quotes in a GraphQL document."""
    return (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )


class RunPodProvider:
    """Pods on RunPod. See `cloud.base` for the contract and this module's docstring for details.

    `api_key` is never logged, raised or returned. `base_url` overrides `RUNPOD_API_BASE_URL` for
    this provider's calls only (tests point it at a loopback server).
    """

    name = "runpod"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not api_key:
            raise AuthFailed("no RunPod API key configured (set RUNPOD_API_KEY)")
        self._api_key = api_key
        self._base_url = base_url.rstrip("/") if base_url else None
        self._retry = retry or RetryPolicy()
        self._redactor = Redactor([api_key])
        self._http = threading.local()  # a requests.Session per thread (a Session is not thread-safe)

    def __repr__(self) -> str:
        return f"RunPodProvider(base_url={self._base_url or os.environ.get('RUNPOD_API_BASE_URL') or 'default'!r})"

    # --- the contract ------------------------------------------------------------------------

    def create(self, name: str, spec: PodSpec) -> Pod:
        if not _POD_NAME.match(name):
            raise InvalidSpec(f"pod name {name!r} has characters RunPod does not accept")
        bad_keys = [key for key in spec.env if not _ENV_KEY.match(key)]
        if bad_keys:
            raise InvalidSpec(f"env keys {bad_keys} are not valid variable names")
        if not spec.gpu_types:
            raise InvalidSpec("the pod spec lists no GPU type")
        redactor = self._redactor.child(*(spec.env.get(key) for key in spec.secret_env_keys))

        try:
            existing = self._find_by_name(name, redactor)
        except (RateLimited, Transient) as exc:
            # Create is idempotent by name only as far as the list answers. When it cannot be asked
            # (past its retry budget), the pod is created anyway: a second pod with this name is
            # found by the Scaler's reconcile once the list answers again, and terminated.
            metrics.record_error("cloud", "create_lookup_failed")
            logger.warning("create pod %s: could not look for an existing one (%s); creating it", name, exc)
            existing = None
        if existing is not None:
            logger.info("pod %s already exists as %s (%s): returning it", name, existing.id, existing.status)
            return existing

        volumes: list[tuple[str, str, str | None]] = (
            self._resolve_volumes(spec.network_volumes, redactor) if spec.network_volumes else []
        )
        if spec.network_volumes and not volumes:
            raise InvalidSpec(f"none of the network volumes {spec.network_volumes} exists in this account")
        env = {key: _gql_string(value) for key, value in spec.env.items()}
        ram_tiers: list[int | None] = list(spec.ram_tiers_gb) or [None]
        volume_choices: list[tuple[str, str, str | None] | None] = list(volumes) or [None]

        tried: list[str] = []
        unknown_gpus: set[str] = set()
        capacity_misses = 0
        for ram in ram_tiers:
            for volume in volume_choices:
                for gpu in spec.gpu_types:
                    if gpu in unknown_gpus:
                        continue
                    label = f"gpu={gpu!r} volume={volume[0] if volume else None!r} ram={ram}"
                    try:
                        answer = self._deploy(name, spec, env, gpu, volume, ram, redactor)
                    except CapacityUnavailable as exc:
                        capacity_misses += 1
                        tried.append(label)
                        metrics.record_error("cloud", "capacity_unavailable")
                        logger.warning("pod %s: no capacity for %s (%s); trying the next preference", name, label, exc)
                        continue
                    except UnknownGpuType as exc:
                        unknown_gpus.add(gpu)
                        tried.append(label)
                        metrics.record_error("cloud", "unknown_gpu_type")
                        logger.warning("pod %s: %s; skipping this GPU type", name, exc)
                        continue
                    pod = self._pod_from(
                        answer,
                        redactor,
                        name=name,
                        gpu_type=gpu,
                        network_volume=volume[0] if volume else None,
                        ram_tier_gb=ram,
                    )
                    logger.info(
                        "created pod %s for %s with %s after %d unavailable combination(s)",
                        pod.id,
                        name,
                        label,
                        len(tried),
                    )
                    return pod
        if capacity_misses:
            raise CapacityUnavailable(
                f"no capacity for pod {name} in any of {len(tried)} combination(s): " + "; ".join(tried)
            )
        raise InvalidSpec(f"pod {name}: no usable GPU type among {spec.gpu_types}")

    def get(self, pod_id: str) -> Pod:
        return self._pod_from(self._answer(pod_id), self._redactor)

    def list(self, name_prefix: str) -> list[Pod]:
        answers = self._call_unlocked("list pods", self._pod_answers) or []
        # Only our pods are read into Pods (and redacted): the account's others are passed over.
        ours = [answer for answer in answers if str(answer.get("name") or "").startswith(name_prefix)]
        pods = [self._pod_from(answer, self._redactor) for answer in ours]
        return [pod for pod in pods if pod.status is not PodStatus.TERMINATED]

    def terminate(self, pod_id: str) -> None:
        self._check_id(pod_id)
        try:
            self._call(f"terminate pod {pod_id}", lambda: ctl_commands.terminate_pod(pod_id))
        except NotFound:
            logger.info("terminate pod %s: already gone", pod_id)
            return
        except (AuthFailed, RateLimited, Transient):
            raise
        except ProviderError as exc:
            # The API's wording for "no such pod" is not documented: if the pod is gone, the
            # terminate is done; otherwise the original error stands.
            try:
                self.get(pod_id)
            except NotFound:
                logger.info("terminate pod %s: already gone (%s)", pod_id, exc)
                return
            raise
        logger.info("terminated pod %s", pod_id)

    def stop(self, pod_id: str) -> None:
        self._check_id(pod_id)
        try:
            self._call(f"stop pod {pod_id}", lambda: ctl_commands.stop_pod(pod_id))
        except (AuthFailed, RateLimited, Transient):
            raise
        except ProviderError as exc:
            # What the API answers for a pod that is stopped already (or gone) is not documented:
            # a stopped pod is what was asked for, a gone one is NotFound (raised by `get`).
            if self.get(pod_id).status is PodStatus.EXITED:
                logger.info("stop pod %s: already stopped (%s)", pod_id, exc)
                return
            raise
        logger.info("stopped pod %s", pod_id)

    def resume(self, pod_id: str) -> Pod:
        before = self._answer(pod_id)
        if map_status(before) in (PodStatus.RUNNING, PodStatus.PENDING):
            logger.info("resume pod %s: it runs already", pod_id)
            return self._pod_from(before, self._redactor)
        # The mutation asks for a GPU count: the pod's own (resuming with fewer or none is a
        # different pod, not the one parked).
        gpu_count = int(before.get("gpuCount") or 1)
        try:
            answer = self._call(f"resume pod {pod_id}", lambda: ctl_commands.resume_pod(pod_id, gpu_count))
        except (AuthFailed, RateLimited, Transient, CapacityUnavailable, NotFound):
            raise
        except ProviderError as exc:
            # A retried resume whose first attempt went through may be refused as such: a pod that
            # runs now was resumed; otherwise the original error stands.
            pod = self.get(pod_id)
            if pod.status in (PodStatus.RUNNING, PodStatus.PENDING):
                logger.info("resume pod %s: it runs already (%s)", pod_id, exc)
                return pod
            raise
        # The answer has no runtime: the container is starting again on its host (PENDING).
        pod = self._pod_from({**before, **(answer or {}), "runtime": None}, self._redactor)
        logger.info("resumed pod %s (%s, %d GPU)", pod_id, pod.status, gpu_count)
        return pod

    def close(self) -> None:
        """The calling thread's kept-alive session closes (the SDK's own calls keep none); other
        threads' sessions close with their thread."""
        session = getattr(self._http, "session", None)
        if session is not None:
            self._http.session = None
            session.close()

    # --- helpers -----------------------------------------------------------------------------

    def _answer(self, pod_id: str) -> dict[str, Any]:
        """RunPod's answer about one pod, unredacted (for this module only); NotFound when gone."""
        self._check_id(pod_id)
        answer: dict[str, Any] | None = self._call(
            f"get pod {pod_id}", lambda: ctl_commands.get_pod(pod_id, api_key=self._api_key)
        )
        if not answer:
            raise NotFound(f"pod {pod_id} is not known to RunPod (gone)")
        if map_status(answer) is PodStatus.TERMINATED:
            raise NotFound(f"pod {pod_id} is terminated")
        return answer

    @staticmethod
    def _check_id(pod_id: str) -> None:
        if not _POD_NAME.match(pod_id):
            raise InvalidSpec(f"pod id {pod_id!r} is not a RunPod pod id")

    def _find_by_name(self, name: str, redactor: Redactor) -> Pod | None:
        answers = self._call_unlocked(f"look up pod {name}", self._pod_answers, redactor)
        for answer in answers or []:
            if answer.get("name") == name:
                pod = self._pod_from(answer, redactor)
                if pod.status is not PodStatus.TERMINATED:
                    return pod
        return None

    def _resolve_volumes(self, wanted: _Volumes, redactor: Redactor) -> _VolumeChoices:
        """(label, id, data center) of each configured volume, matched by id or by name."""
        user = self._call("list network volumes", ctl_commands.get_user, redactor) or {}
        known = user.get("networkVolumes") or []
        out: _VolumeChoices = []
        for label in wanted:
            match = next((v for v in known if label in (v.get("id"), v.get("name"))), None)
            if match is None:
                logger.warning("network volume %r is not in this RunPod account; skipping it", label)
                continue
            out.append((label, str(match["id"]), match.get("dataCenterId")))
        return out

    def _deploy(
        self,
        name: str,
        spec: PodSpec,
        env: dict[str, str],
        gpu: str,
        volume: tuple[str, str, str | None] | None,
        ram: int | None,
        redactor: Redactor,
    ) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            answer: dict[str, Any] = ctl_commands.create_pod(
                name=name,
                image_name=_gql_string(spec.image),
                gpu_type_id=_gql_string(gpu),
                cloud_type=spec.cloud_type,
                support_public_ip=True,
                start_ssh=True,
                gpu_count=spec.gpu_count,
                volume_in_gb=0,
                container_disk_in_gb=spec.container_disk_gb,
                min_vcpu_count=spec.min_vcpu,
                min_memory_in_gb=ram if ram is not None else 1,
                ports=spec.ports or None,
                docker_args=_gql_string(f"bash -c {shlex.quote(spec.start_command)}") if spec.start_command else "",
                volume_mount_path=spec.volume_mount_path,
                env=env,
                network_volume_id=volume[1] if volume else None,
                data_center_id=volume[2] if volume else None,
            )
            return answer

        def already_made() -> dict[str, Any] | None:
            # A create that failed in flight (timeout, 5xx after commit) may have made the pod.
            pod = self._find_by_name(name, redactor)
            return dict(pod.raw, id=pod.id) if pod is not None else None

        return call_with_retries(
            lambda: self._once(f"create pod {name}", once, redactor, default=InvalidSpec),
            self._retry,
            what=f"create pod {name}",
            logger=logger,
            before_retry=already_made,
        )

    def _call(self, what: str, fn: Callable[[], T], redactor: Redactor | None = None) -> T:
        return call_with_retries(
            lambda: self._once(what, fn, redactor or self._redactor), self._retry, what=what, logger=logger
        )

    def _call_unlocked(self, what: str, fn: Callable[[], T], redactor: Redactor | None = None) -> T:
        """`_call` for a function that reads no SDK global (it runs beside the SDK's calls)."""
        return call_with_retries(
            lambda: self._once(what, fn, redactor or self._redactor, sdk=False), self._retry, what=what, logger=logger
        )

    def _pod_answers(self) -> Any:
        """Every pod of the account: the SDK's `get_pods` query, posted on this thread's kept-alive
        session and decoded once. Fails like the SDK: AuthenticationError on 401, QueryError for
        GraphQL `errors`, a JSON decode error or a `requests` exception otherwise."""
        session = getattr(self._http, "session", None)
        if session is None:
            session = self._http.session = requests.Session()
        base = self._base_url or os.environ.get("RUNPOD_API_BASE_URL", _DEFAULT_API_URL)
        response = session.post(
            f"{base}/graphql",
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Authorization": f"Bearer {self._api_key}",
            },
            data=json.dumps({"query": pod_queries.QUERY_POD}),
            timeout=_HTTP_TIMEOUT_S,
        )
        if response.status_code == 401:
            raise runpod.error.AuthenticationError("Unauthorized request, please check your API key.")
        answer = json.loads(response.content)
        if "errors" in answer:
            raise runpod.error.QueryError(answer["errors"][0]["message"], pod_queries.QUERY_POD)
        return answer["data"]["myself"]["pods"]

    def _once(
        self,
        what: str,
        fn: Callable[[], T],
        redactor: Redactor,
        default: type[ProviderError] = ProviderError,
        *,
        sdk: bool = True,
    ) -> T:
        error: ProviderError | None = None
        with self._sdk_session() if sdk else contextlib.nullcontext():
            try:
                return fn()
            except Exception as exc:  # translated below, outside the except block: no chaining
                error = _translate(what, exc, redactor, default)
        raise error

    @contextmanager
    def _sdk_session(self) -> Iterator[None]:
        with _SDK_LOCK:
            old_key = runpod.api_key
            old_url = os.environ.get("RUNPOD_API_BASE_URL")
            runpod.api_key = self._api_key
            if self._base_url:
                os.environ["RUNPOD_API_BASE_URL"] = self._base_url
            try:
                yield
            finally:
                runpod.api_key = old_key
                if self._base_url:
                    if old_url is None:
                        os.environ.pop("RUNPOD_API_BASE_URL", None)
                    else:
                        os.environ["RUNPOD_API_BASE_URL"] = old_url

    def _pod_from(
        self,
        answer: dict[str, Any],
        redactor: Redactor,
        *,
        name: str | None = None,
        gpu_type: str | None = None,
        network_volume: str | None = None,
        ram_tier_gb: int | None = None,
    ) -> Pod:
        machine = answer.get("machine") or {}
        cost = answer.get("costPerHr")
        return Pod(
            id=str(answer["id"]),
            name=str(answer.get("name") or name or ""),
            status=map_status(answer) if "desiredStatus" in answer else PodStatus.PENDING,
            gpu_type=gpu_type or machine.get("gpuDisplayName"),
            cost_per_hour=float(cost) if isinstance(cost, int | float) else None,
            ssh_endpoint=_ssh_endpoint(answer),
            network_volume=network_volume,
            ram_tier_gb=ram_tier_gb,
            raw=redactor.data(answer),
        )


def _ssh_endpoint(answer: dict[str, Any]) -> str | None:
    runtime = answer.get("runtime") or {}
    for port in runtime.get("ports") or []:
        if port.get("privatePort") == 22 and port.get("isIpPublic") and port.get("ip"):
            return f"{port['ip']}:{port.get('publicPort')}"
    return None


def _translate(what: str, exc: Exception, redactor: Redactor, default: type[ProviderError]) -> ProviderError:
    """One typed, scrubbed error for whatever the SDK raised."""
    if isinstance(exc, runpod.error.AuthenticationError):
        return AuthFailed(f"{what}: RunPod refused the API key ({redactor.text(str(exc))})")
    if isinstance(exc, runpod.error.QueryError):
        message = redactor.text(str(exc.message or "no message"))
        return classify_message(message, default)(f"{what}: RunPod answered: {message}")
    if isinstance(exc, json.JSONDecodeError):  # requests' own is one too
        return Transient(f"{what}: RunPod answered something that is not JSON")
    if isinstance(exc, requests.exceptions.Timeout):
        return Transient(f"{what}: RunPod did not answer in time")
    if isinstance(exc, requests.exceptions.RequestException):
        return Transient(f"{what}: cannot reach RunPod ({type(exc).__name__}: {redactor.text(str(exc))})")
    if isinstance(exc, ValueError) and "no gpu found" in str(exc).lower():
        return UnknownGpuType(f"{what}: RunPod knows no such GPU type")
    if isinstance(exc, KeyError | TypeError | IndexError | AttributeError | ValueError):
        return Transient(f"{what}: RunPod's answer has an unexpected shape ({type(exc).__name__})")
    return ProviderError(f"{what}: {type(exc).__name__}: {redactor.text(str(exc))}")
