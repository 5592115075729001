"""A loopback stand-in for RunPod's GraphQL API, for driving the real `runpod` SDK in tests.

It speaks the operations the SDK sends (`podFindAndDeployOnDemand`, `podTerminate`, `podStop`,
`podResume`, `pod(input: {podId})`, `myself { pods }`, `myself { networkVolumes }`, `gpuTypes`) with
the real answer shapes, and on command the real error shapes: no capacity for a GPU type / volume /
RAM tier, no free GPU on a stopped pod's host, 401, 429, 500, malformed JSON, slow answers.

A stopped pod answers desiredStatus EXITED with no runtime; a resumed one RUNNING with no runtime
(the container starting again) for `resume_delay_s`, then with its runtime.

    api = FakeRunPodApi(api_key="k", gpu_types=["NVIDIA GeForce RTX 4090"])
    with api:                      # serves on 127.0.0.1:<free port>
        api.base_url               # -> RUNPOD_API_BASE_URL
        api.no_capacity(gpu="NVIDIA GeForce RTX 4090")
        api.fail_next(429, 500)    # the next two requests answer 429 then 500
        api.no_gpu_on_host(pod_id) # resumes of that pod (None: of any) are refused until freed
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["CAPACITY_MESSAGE", "NO_GPU_ON_HOST_MESSAGE", "FakeRunPodApi", "Fault"]

CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. Please refresh and try again."
)
NO_GPU_ON_HOST_MESSAGE = "There are not enough free GPUs on the host machine to start this pod."
INTERNAL_MESSAGE = "Something went wrong. Please try again later or contact support."

_STRING = r'"((?:[^"\\]|\\.)*)"'


def _unescape(raw: str) -> str:
    return str(json.loads(f'"{raw}"'))


@dataclass
class Fault:
    """What the next matching request gets instead of a normal answer."""

    kind: str  # "429", "500", "500-json", "401", "malformed", "slow", "capacity", "not-found"
    operation: str | None = None  # only requests of this operation ("deploy", "terminate", ...)
    delay_s: float = 0.0  # for "slow": wait, then answer normally


@dataclass
class _Pod:
    id: str
    name: str
    gpu_type: str
    image: str
    env: dict[str, str]
    network_volume_id: str | None
    min_memory_gb: int | None
    created_at: float
    desired: str = "CREATED"
    cost_per_hr: float = 0.69
    resumed_at: float | None = None  # monotonic time of the last resume
    gpu_count: int = 1

    def answer(self, boot_delay_s: float, resume_delay_s: float = 0.0) -> dict[str, Any]:
        now = time.monotonic()
        booted = now - self.created_at >= boot_delay_s
        desired = "RUNNING" if self.desired == "CREATED" and booted else self.desired
        restarting = self.resumed_at is not None and now - self.resumed_at < resume_delay_s
        runtime = None
        if desired == "RUNNING" and not restarting:
            runtime = {
                "ports": [
                    {"ip": "203.0.113.7", "isIpPublic": True, "privatePort": 22, "publicPort": 10121, "type": "tcp"}
                ]
            }
        return {
            "id": self.id,
            "containerDiskInGb": 50,
            "costPerHr": self.cost_per_hr,
            "desiredStatus": desired,
            "dockerArgs": "",
            "dockerId": None,
            "env": [f"{k}={v}" for k, v in self.env.items()],  # the real API echoes env back
            "gpuCount": self.gpu_count,
            "imageName": self.image,
            "lastStatusChange": "Rented by User: Thu Oct 16 2025 17:55:06 GMT+0000",
            "machineId": "m" + self.id[:6],
            "memoryInGb": self.min_memory_gb or 62,
            "name": self.name,
            "podType": "RESERVED",
            "port": None,
            "ports": "22/tcp",
            "uptimeSeconds": 0,
            "vcpuCount": 8,
            "volumeInGb": 0,
            "volumeMountPath": "/workspace",
            "runtime": runtime,
            "machine": {"gpuDisplayName": self.gpu_type.split()[-1], "podHostId": self.id + "-host"},
        }


@dataclass
class FakeRunPodApi:
    api_key: str = "test-runpod-key"
    gpu_types: list[str] = field(default_factory=lambda: ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"])
    network_volumes: list[dict[str, Any]] = field(default_factory=list)  # {"id","name","dataCenterId"}
    boot_delay_s: float = 0.0
    resume_delay_s: float = 0.0  # a resumed pod's container starts again on its host (image there)

    def __post_init__(self) -> None:
        self.pods: dict[str, _Pod] = {}
        self.operations: list[str] = []  # every operation received, in order
        self.bodies: list[str] = []  # every request body received
        self.deploy_inputs: list[dict[str, Any]] = []  # parsed input of every deploy attempt
        self._faults: list[Fault] = []
        # (until monotonic, operation, pod id or None, kind): every matching request fails until then
        self._windows: list[tuple[float, str, str | None, str]] = []
        self._unavailable: list[Callable[[dict[str, Any]], bool]] = []
        self._hosts_full: set[str | None] = set()  # pod ids whose host has no free GPU (None: every host)
        self.resume_inputs: list[dict[str, Any]] = []  # parsed input of every resume
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # --- knobs -------------------------------------------------------------------------------

    def fail_next(self, *kinds: str | Fault) -> None:
        with self._lock:
            self._faults.extend(k if isinstance(k, Fault) else Fault(kind=k) for k in kinds)

    def fail_for(self, seconds: float, operation: str, *, pod_id: str | None = None, kind: str = "500") -> None:
        """Every request of `operation` (about `pod_id` only, when given) answers `kind` for `seconds`."""
        with self._lock:
            self._windows.append((time.monotonic() + seconds, operation, pod_id, kind))

    def end_faults(self) -> None:
        """Every fault still pending (next-request faults and time windows) ends now."""
        with self._lock:
            self._faults.clear()
            self._windows.clear()

    def no_capacity(self, gpu: str | None = None, volume: str | None = None, ram: int | None = None) -> None:
        """Deploys matching every given field answer the capacity error."""

        def matches(inp: dict[str, Any]) -> bool:
            return (
                (gpu is None or inp.get("gpuTypeId") == gpu)
                and (volume is None or inp.get("networkVolumeId") == volume)
                and (ram is None or inp.get("minMemoryInGb") == ram)
            )

        with self._lock:
            self._unavailable.append(matches)

    def no_gpu_on_host(self, pod_id: str | None = None) -> None:
        """Resumes of this pod (None: of every pod) are refused, as RunPod refuses them when the
        host's GPUs were rented out meanwhile, until `free_gpu_on_host`."""
        with self._lock:
            self._hosts_full.add(pod_id)

    def free_gpu_on_host(self, pod_id: str | None = None) -> None:
        """Undo `no_gpu_on_host` for this pod (None: for every pod)."""
        with self._lock:
            if pod_id is None:
                self._hosts_full.clear()
            else:
                self._hosts_full.discard(pod_id)

    def add_pod(self, name: str, gpu_type: str = "NVIDIA GeForce RTX 4090", desired: str = "RUNNING") -> str:
        pod = _Pod(
            id=secrets.token_hex(7),
            name=name,
            gpu_type=gpu_type,
            image="img",
            env={},
            network_volume_id=None,
            min_memory_gb=None,
            created_at=time.monotonic() - 3600,
            desired=desired,
        )
        with self._lock:
            self.pods[pod.id] = pod
        return pod.id

    def count(self, operation: str) -> int:
        return sum(1 for op in self.operations if op == operation)

    # --- server ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeRunPodApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                status, payload = api._handle(self.path, self.headers.get("Authorization", ""), body)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(payload, str) else "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-runpod", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeRunPodApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API -----------------------------------------------------------------------------

    def _handle(self, path: str, auth: str, body: str) -> tuple[int, Any]:
        query = str(json.loads(body).get("query", "")) if body else ""
        operation = _operation(query)
        with self._lock:
            self.operations.append(operation)
            self.bodies.append(body)
            fault = next(
                (f for f in self._faults if f.operation in (None, operation)),
                None,
            )
            if fault is not None:
                self._faults.remove(fault)
            elif (window := self._window(operation, query)) is not None:
                fault = Fault(kind=window)
        if path != "/graphql":
            return 404, {"errors": [{"message": f"no route {path}"}]}
        if fault is not None:
            answer = self._fault_answer(fault)
            if answer is not None:
                return answer
        if auth != f"Bearer {self.api_key}":
            return 401, {"errors": [{"message": "Unauthorized"}]}
        with self._lock:
            return self._answer(operation, query)

    def _window(self, operation: str, query: str) -> str | None:
        now = time.monotonic()
        for until, op, pod_id, kind in self._windows:
            if now < until and op == operation and (pod_id is None or f'"{pod_id}"' in query):
                return kind
        return None

    def _fault_answer(self, fault: Fault) -> tuple[int, Any] | None:
        if fault.kind == "slow":
            time.sleep(fault.delay_s)
            return None
        return {
            "429": (429, {"errors": [{"message": "Too Many Requests: rate limit exceeded"}]}),
            "500": (500, "<html><body><h1>500 Internal Server Error</h1></body></html>"),
            "500-json": (
                500,
                {"errors": [{"message": INTERNAL_MESSAGE, "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]},
            ),
            "401": (401, {"errors": [{"message": "Unauthorized"}]}),
            "malformed": (200, '{"data": {"myself": '),
            "capacity": (200, {"errors": [{"message": CAPACITY_MESSAGE}], "data": None}),
            "not-found": (200, {"errors": [{"message": "Pod not found"}], "data": None}),
        }[fault.kind]

    def _answer(self, operation: str, query: str) -> tuple[int, Any]:
        if operation == "gpuType":
            gpu_id = _unescape(re.search(r"gpuTypes\(input: \{id: " + _STRING, query).group(1))  # type: ignore[union-attr]
            found = [_gpu(g) for g in self.gpu_types if g == gpu_id]
            return 200, {"data": {"gpuTypes": found}}
        if operation == "gpuTypes":
            return 200, {"data": {"gpuTypes": [_gpu(g) for g in self.gpu_types]}}
        if operation == "user":
            return 200, {"data": {"myself": {"id": "user1", "pubKey": "", "networkVolumes": self.network_volumes}}}
        if operation == "pods":
            pods = [
                p.answer(self.boot_delay_s, self.resume_delay_s)
                for p in self.pods.values()
                if p.desired != "TERMINATED"
            ]
            return 200, {"data": {"myself": {"pods": pods}}}
        if operation == "pod":
            pod = self._live_pod(query)
            if pod is None:
                return 200, {"data": {"pod": None}}
            return 200, {"data": {"pod": pod.answer(self.boot_delay_s, self.resume_delay_s)}}
        if operation == "terminate":
            pod = self._live_pod(query)
            if pod is None:
                return 200, {"errors": [{"message": "Pod not found"}], "data": {"podTerminate": None}}
            pod.desired = "TERMINATED"
            return 200, {"data": {"podTerminate": None}}
        if operation == "stop":
            pod = self._live_pod(query)
            if pod is None:
                return 200, {"errors": [{"message": "Pod not found"}], "data": {"podStop": None}}
            pod.desired = "EXITED"
            return 200, {"data": {"podStop": {"id": pod.id, "desiredStatus": "EXITED"}}}
        if operation == "resume":
            return self._resume(query)
        if operation == "deploy":
            return self._deploy(query)
        return 400, {"errors": [{"message": f"Cannot query this fake with: {query[:80]}"}]}

    def _live_pod(self, query: str) -> _Pod | None:
        """The pod the query names by `podId`, unless it is unknown or terminated."""
        pod_id = _unescape(re.search(r"podId: " + _STRING, query).group(1))  # type: ignore[union-attr]
        pod = self.pods.get(pod_id)
        return None if pod is None or pod.desired == "TERMINATED" else pod

    def _resume(self, query: str) -> tuple[int, Any]:
        self.resume_inputs.append(_parse_input(query))
        pod = self._live_pod(query)
        if pod is None:
            return 200, {"errors": [{"message": "Pod not found"}], "data": {"podResume": None}}
        if pod.desired == "EXITED":
            if {None, pod.id} & self._hosts_full:
                return 200, {"errors": [{"message": NO_GPU_ON_HOST_MESSAGE}], "data": {"podResume": None}}
            pod.desired = "RUNNING"
            pod.resumed_at = time.monotonic()
        return 200, {
            "data": {
                "podResume": {
                    "id": pod.id,
                    "desiredStatus": pod.desired,
                    "imageName": pod.image,
                    "env": [f"{k}={v}" for k, v in pod.env.items()],
                    "machineId": "m" + pod.id[:6],
                    "machine": {"podHostId": pod.id + "-host"},
                }
            }
        }

    def _deploy(self, query: str) -> tuple[int, Any]:
        inp = _parse_input(query)
        self.deploy_inputs.append(inp)
        if inp.get("gpuTypeId") not in self.gpu_types:
            return 200, {"errors": [{"message": "There is no GPU type with this id."}]}
        if any(rule(inp) for rule in self._unavailable):
            return 200, {"errors": [{"message": CAPACITY_MESSAGE}], "data": None}
        pod = _Pod(
            id=secrets.token_hex(7),
            name=str(inp.get("name")),
            gpu_type=str(inp["gpuTypeId"]),
            image=str(inp.get("imageName")),
            env=dict(inp.get("env") or {}),
            network_volume_id=inp.get("networkVolumeId"),
            min_memory_gb=inp.get("minMemoryInGb"),
            created_at=time.monotonic(),
            gpu_count=int(inp.get("gpuCount") or 1),
        )
        self.pods[pod.id] = pod
        return 200, {
            "data": {
                "podFindAndDeployOnDemand": {
                    "id": pod.id,
                    "imageName": pod.image,
                    "env": [f"{k}={v}" for k, v in pod.env.items()],
                    "machineId": "m" + pod.id[:6],
                    "machine": {"podHostId": pod.id + "-host"},
                }
            }
        }


def _gpu(gpu_id: str) -> dict[str, Any]:
    return {
        "id": gpu_id,
        "displayName": gpu_id.split()[-1],
        "memoryInGb": 24,
        "maxGpuCount": 8,
        "manufacturer": "Nvidia",
        "cudaCores": 0,
        "secureCloud": True,
        "communityCloud": True,
        "securePrice": 0.69,
        "communityPrice": 0.44,
        "oneMonthPrice": None,
        "threeMonthPrice": None,
        "oneWeekPrice": None,
        "communitySpotPrice": 0.3,
        "secureSpotPrice": 0.4,
        "lowestPrice": {"minimumBidPrice": 0.3, "uninterruptablePrice": 0.44},
    }


def _operation(query: str) -> str:
    if "podFindAndDeployOnDemand" in query:
        return "deploy"
    if "podTerminate" in query:
        return "terminate"
    if "podStop" in query:
        return "stop"
    if "podResume" in query:
        return "resume"
    if "gpuTypes(input" in query:
        return "gpuType"
    if "gpuTypes" in query:
        return "gpuTypes"
    if re.search(r"\bpod\(input", query):
        return "pod"
    if "networkVolumes" in query:
        return "user"
    if "pods" in query:
        return "pods"
    return "unknown"


def _parse_input(query: str) -> dict[str, Any]:
    """The `input: {...}` fields of a deploy mutation, with GraphQL string escapes decoded."""
    start = query.index("input:")
    out: dict[str, Any] = {}
    rest = query[start:]
    env_at = rest.find("env: [")
    if env_at >= 0:
        entry = re.compile(r"\s*\{ key: " + _STRING + r", value: " + _STRING + r" \},?")
        pos = env_at + len("env: [")
        env: dict[str, str] = {}
        while (m := entry.match(rest, pos)) is not None:
            env[_unescape(m.group(1))] = _unescape(m.group(2))
            pos = m.end()
        end = rest.index("]", pos)
        out["env"] = env
        rest = rest[:env_at] + rest[end + 1 :]
    for key, string, other in re.findall(r"(\w+): (?:" + _STRING + r"|([\w.]+))", rest):
        if key in ("input", "env"):
            continue
        if string or other == "":
            out[key] = _unescape(string)
        elif other == "null":
            out[key] = None
        elif other in ("true", "false"):
            out[key] = other == "true"
        elif re.fullmatch(r"-?\d+", other):
            out[key] = int(other)
        else:
            out[key] = other
    return out
