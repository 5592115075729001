"""LocalProvider: pods are local processes running the reference worker (`make demo`, tests).

Many processes construct their own LocalProvider (one WorkerLifecycle actor per pod, the Scaler,
the CLI) and must see the same pods, and pods must outlive any of them. So the registry is on
disk, one JSON file per pod name in `<state_dir>/local-pods/`, and every call reads it:

- `create` takes an exclusive `flock` on `<name>.lock`, returns the recorded pod if one lives
  under that name, else starts `python -m worker --worker-id <name>` detached and writes
  `<name>.json` atomically. Idempotent across processes.
- Detached: a short-lived `sh` in a new session (its own process group) starts the worker in the
  background and exits, so the pod is re-parented to init and is nobody's child. Ray kills a
  worker process's children when the worker exits (`ray.kill`, SIGKILL, restart); a pod created
  by the Scaler or a WorkerLifecycle must outlive both, and this way it does without turning that
  Ray setting off (which forced a fresh Ray worker process per lifecycle, ~1.6 s each). It also
  means no process of ours has to reap exited pods (init does).
- A pod is RUNNING while its process lives, EXITED once it has exited, and gone (NotFound, not
  listed) after `terminate`. Liveness checks the pid *and* its start time from /proc, so a reused
  pid is never mistaken for the pod.
- `terminate` sends SIGTERM to the group, waits `terminate_grace_s`, SIGKILLs what is left,
  confirms no process of the group remains, and only then records the pod as terminated.
- `stop` ends the process group the same way but keeps the pod, recorded as stopped (EXITED);
  `resume` starts the same command again under the same pod id, name and env (after
  `resume_boot_delay_s`: a stopped pod's image is on its host already), under the name's `flock`
  like `create`, so two processes resuming it start one worker.

The JSON record keeps env *keys*, never values. A resume needs the values (the pod's own
credentials, made by the caller for this worker: the provider cannot rebuild them), so the spec's
env is also kept in `<name>.env`, readable by its owner only (0600, like the state directory's
other credentials), never logged or put in `Pod.raw`, and deleted when the pod is terminated. This
is what RunPod does too: it keeps a stopped pod's env and restarts it with it.

Failure injection (for tests and demos of the failure paths), per pod through `PodSpec.env` or for
every pod whose name matches a glob through `set_fault` (stored in `faults.json`, so it reaches
providers in other processes): `LocalFaults(never_start=True)` exits at once,
`crash_after_s=N` dies after N s, `stop_heartbeat_after_s=N` keeps running but goes silent,
`resume_refused=True` refuses resumes with CapacityUnavailable (RunPod: no free GPU on the host).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud.base import CapacityUnavailable, InvalidSpec, NotFound, Pod, PodSpec, PodStatus, ProviderError
from telemetry import metrics

__all__ = ["PROJECT_ROOT", "LocalFaults", "LocalProvider"]

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
# Env the orchestrator's own process may hold that a pod has no business seeing: its own credentials
# (a pod gets one of its own worker through its spec, see cloud/spec.py).
_NOT_INHERITED = frozenset(
    {
        "RUNPOD_API_KEY",
        "DATABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_JWT_SECRET",
        "SUPABASE_WORKER_TOKEN",
        "ORCHESTRATOR_DATABASE__URL",
        "ORCHESTRATOR_DATABASE__SUPABASE_SERVICE_ROLE_KEY",
        "ORCHESTRATOR_DATABASE__SUPABASE_JWT_SECRET",
        "ORCHESTRATOR_PROVIDER__RUNPOD_API_KEY",
    }
)
# Started by `sh` in a new session: "$@" runs in the background, its pid is printed, `sh` exits.
# A simple background command is exec'd by the forked shell, so `$!` is the worker's own pid.
_DETACH_SH = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
_DETACH_TIMEOUT_S = 10.0
_ZOMBIE_REAP_WAIT_S = 2.0  # how long terminate waits for init to reap a killed pod's zombies


@dataclass(frozen=True, slots=True)
class LocalFaults:
    """Failure injection for a local pod; the worker reads these as WORKER_FAULT_* variables."""

    never_start: bool = False  # the process exits at once (status EXITED, no heartbeat ever)
    crash_after_s: float | None = None  # the process dies (exit 70) this long after start
    stop_heartbeat_after_s: float | None = None  # alive but silent after this long
    resume_refused: bool = False  # resumes raise CapacityUnavailable (the host's GPUs were taken)

    def to_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.never_start:
            env["WORKER_FAULT_EXIT_AT_START"] = "1"
        if self.crash_after_s is not None:
            env["WORKER_FAULT_CRASH_AFTER_S"] = str(self.crash_after_s)
        if self.stop_heartbeat_after_s is not None:
            env["WORKER_FAULT_STOP_HEARTBEAT_AFTER_S"] = str(self.stop_heartbeat_after_s)
        return env


# --- /proc helpers ----------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgrp, start time in clock ticks) of a pid, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # After "(comm)": state is field 3, pgrp 5, starttime 22 of proc(5); here shifted by 3.
    return fields[0], int(fields[2]), int(fields[19])


def _alive(pid: int, start_ticks: int | None) -> bool:
    stat = _proc_stat(pid)
    if stat is None:
        return False
    state, _, started = stat
    if start_ticks is not None and started != start_ticks:
        return False  # the pid was reused by another process
    return state not in ("Z", "X")


def _wait_reaped(pgid: int, not_before_ticks: int | None) -> None:
    """Give init a moment to reap the pod's zombies (it is their parent now), so that "gone" means
    no /proc entry either. A zombie holds nothing but a pid, so an init that never reaps costs at
    most `_ZOMBIE_REAP_WAIT_S`, never a failure."""
    deadline = time.monotonic() + _ZOMBIE_REAP_WAIT_S
    while _group_members(pgid, not_before_ticks, zombies=True) and time.monotonic() < deadline:
        time.sleep(0.02)


def _group_members(pgid: int, not_before_ticks: int | None, *, zombies: bool = False) -> list[int]:
    """Live processes of the group started no earlier than the pod (guards against pgid reuse);
    with `zombies`, exited ones not yet reaped as well."""
    dead_states = () if zombies else ("Z", "X")
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is None:
            continue
        state, pgrp, started = stat
        if pgrp == pgid and state not in dead_states and (not_before_ticks is None or started >= not_before_ticks):
            members.append(int(entry.name))
    return members


class LocalProvider:
    """Pods as local worker processes; see the module docstring.

    `state_dir` is shared by every process of one orchestrator; a relative path is taken from the
    project root (not the cwd, which differs between Ray workers). `handler` is the worker's
    `--handler` value. `extra_env` is added to every pod's env (under the spec's own env).
    `resume_boot_delay_s` is the worker's boot delay after a resume (default: `boot_delay_s`).
    """

    name = "local"

    def __init__(
        self,
        state_dir: Path | str,
        *,
        boot_delay_s: float = 3.0,
        resume_boot_delay_s: float | None = None,
        handler: str | None = "worker.handlers:demo_handler",
        terminate_grace_s: float = 10.0,
        extra_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        project_root: Path = PROJECT_ROOT,
    ) -> None:
        state = Path(state_dir)
        if not state.is_absolute():
            state = project_root / state
        self.pods_dir = state / "local-pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self._boot_delay_s = boot_delay_s
        self._resume_boot_delay_s = boot_delay_s if resume_boot_delay_s is None else resume_boot_delay_s
        self._handler = handler
        self._terminate_grace_s = terminate_grace_s
        self._extra_env = dict(extra_env or {})
        self._python = python
        self._project_root = project_root

    def __repr__(self) -> str:
        return f"LocalProvider(pods_dir={str(self.pods_dir)!r})"

    # --- knobs -------------------------------------------------------------------------------

    def set_fault(self, name_glob: str, faults: LocalFaults | None) -> None:
        """Inject (or with None, clear) faults for pods created later whose name matches the glob."""
        with self._locked("faults"):
            table = self._read_faults()
            if faults is None:
                table.pop(name_glob, None)
            else:
                table[name_glob] = asdict(faults)
            _write_json(self.pods_dir / "faults.json", table)

    # --- the contract ------------------------------------------------------------------------

    def create(self, name: str, spec: PodSpec) -> Pod:
        if not name or not set(name) <= _NAME_OK or name.startswith("."):
            raise InvalidSpec(f"local pod name {name!r} must be letters, digits, '-', '_' or '.'")
        with self._locked(name):
            record = self._read(name)
            if record is not None and record.get("status") != PodStatus.TERMINATED:
                pod = self._pod(record)
                logger.info("local pod %s already exists (%s): returning it", name, pod.status)
                return pod
            return self._start(name, spec)

    def get(self, pod_id: str) -> Pod:
        record = self._find(pod_id)
        if record is None or record.get("status") == PodStatus.TERMINATED:
            raise NotFound(f"local pod {pod_id} is gone")
        return self._pod(record)

    def list(self, name_prefix: str) -> list[Pod]:
        pods = []
        for record in self._records():
            if record["name"].startswith(name_prefix) and record.get("status") != PodStatus.TERMINATED:
                pods.append(self._pod(record))
        return sorted(pods, key=lambda pod: pod.name)

    def terminate(self, pod_id: str) -> None:
        try:
            with self._pod_locked(pod_id) as record:
                self._kill_group(record)
                record["status"] = str(PodStatus.TERMINATED)
                record["terminated_at"] = _now_iso()
                _write_json(self._path(record["name"]), record)
                self._env_path(record["name"]).unlink(missing_ok=True)
        except NotFound:
            logger.info("terminate local pod %s: already gone", pod_id)
            return
        logger.info("terminated local pod %s (process group %s confirmed gone)", pod_id, record["pgid"])

    def stop(self, pod_id: str) -> None:
        with self._pod_locked(pod_id) as record:
            if record.get("stopped_at") and record.get("status") == PodStatus.EXITED:
                logger.info("stop local pod %s: already stopped", pod_id)
                return
            self._kill_group(record)
            record["status"] = str(PodStatus.EXITED)
            record["stopped_at"] = _now_iso()
            _write_json(self._path(record["name"]), record)
        logger.info("stopped local pod %s (process group %s confirmed gone; kept for a resume)", pod_id, record["pgid"])

    def resume(self, pod_id: str) -> Pod:
        with self._pod_locked(pod_id) as record:
            name = record["name"]
            if record.get("status") == PodStatus.RUNNING and _alive(int(record["pid"]), record.get("start_ticks")):
                logger.info("resume local pod %s: it runs already", pod_id)
                return self._pod(record)
            if any(faults.get("resume_refused") for faults in self._faults_for(name)):
                raise CapacityUnavailable(f"local pod {pod_id}: resume refused (fault injection: no free GPU on host)")
            spec_env = self._read_env(name)
            if spec_env is None:
                raise ProviderError(f"local pod {pod_id} cannot be resumed: its env was not kept")
            env = self._env(name, spec_env, boot_delay_s=self._resume_boot_delay_s)
            pid = _start_detached(
                list(record["argv"]), Path(record["log_path"]), cwd=self._project_root, env=env, name=name
            )
            stat = _proc_stat(pid)
            record.update(
                pid=pid,
                pgid=stat[1] if stat else pid,
                start_ticks=stat[2] if stat else None,
                status=str(PodStatus.RUNNING),
                stopped_at=None,
                resumed_at=_now_iso(),
                resumes=int(record.get("resumes") or 0) + 1,
                boot_delay_s=self._resume_boot_delay_s,
            )
            _write_json(self._path(name), record)
        logger.info("resumed local pod %s as pid %d (detached)", pod_id, pid)
        return self._pod(record)

    def close(self) -> None:
        pass  # nothing held: pods are detached, the registry is on disk

    # --- internals ---------------------------------------------------------------------------

    def _env(self, name: str, spec_env: Mapping[str, str], *, boot_delay_s: float) -> dict[str, str]:
        """A pod process's whole env: ours (minus our credentials), the faults now set for it, its spec's."""
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env.update(self._extra_env)
        env["WORKER_BOOT_DELAY_S"] = str(boot_delay_s)
        for faults in self._faults_for(name):
            env.update(LocalFaults(**faults).to_env())
        env.update(spec_env)
        env["WORKER_ID"] = name
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self._project_root), env.get("PYTHONPATH")) if p)
        return env

    def _start(self, name: str, spec: PodSpec) -> Pod:
        env = self._env(name, spec.env, boot_delay_s=self._boot_delay_s)
        if spec.start_command:
            # The pod's own command, `python` being this interpreter; exec'd so the pid is the worker's.
            command = spec.start_command
            if command.startswith("python "):
                command = shlex.quote(self._python) + command[len("python") :]
            argv = ["/bin/sh", "-c", f"exec {command}"]
        else:
            argv = [self._python, "-m", "worker", "--worker-id", name]
            if self._handler and "WORKER_HANDLER" not in spec.env:
                argv += ["--handler", self._handler]
        log_path = self.pods_dir / f"{name}.log"
        _write_private_json(self._env_path(name), dict(spec.env))  # for a resume; see the module docstring
        pid = _start_detached(argv, log_path, cwd=self._project_root, env=env, name=name)
        stat = _proc_stat(pid)
        record = {
            "id": f"local-{name}-{uuid.uuid4().hex[:6]}",
            "name": name,
            "pid": pid,
            # The group of the (exited) `sh` session leader; the pod and its children stay in it.
            "pgid": stat[1] if stat else pid,
            "start_ticks": stat[2] if stat else None,
            "created_at": _now_iso(),
            "status": str(PodStatus.RUNNING),
            "terminated_at": None,
            "boot_delay_s": float(env["WORKER_BOOT_DELAY_S"]),
            "env_keys": sorted(spec.env),
            "log_path": str(log_path),
            "argv": argv,
        }
        _write_json(self._path(name), record)
        logger.info("started local pod %s as pid %d (detached)", name, pid)
        return self._pod(record)

    def _kill_group(self, record: dict[str, Any]) -> None:
        pgid, ticks = int(record["pgid"]), record.get("start_ticks")
        if not _group_members(pgid, ticks):
            return
        _signal_group(pgid, signal.SIGTERM)
        if self._wait_group_gone(pgid, ticks, self._terminate_grace_s):
            return
        logger.warning("local pod %s ignored SIGTERM for %.1fs: SIGKILL", record["name"], self._terminate_grace_s)
        _signal_group(pgid, signal.SIGKILL)
        if not self._wait_group_gone(pgid, ticks, 10.0):
            raise ProviderError(f"local pod {record['name']}: processes {_group_members(pgid, ticks)} survive SIGKILL")

    @staticmethod
    def _wait_group_gone(pgid: int, ticks: int | None, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if not _group_members(pgid, ticks):
                _wait_reaped(pgid, ticks)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _pod(self, record: dict[str, Any]) -> Pod:
        status = PodStatus(record.get("status", PodStatus.UNKNOWN))
        if status is PodStatus.RUNNING and not _alive(int(record["pid"]), record.get("start_ticks")):
            status = PodStatus.EXITED
        return Pod(
            id=record["id"],
            name=record["name"],
            status=status,
            gpu_type="local",
            cost_per_hour=0.0,
            raw={k: v for k, v in record.items() if k != "argv"} | {"provider": "local"},
        )

    def _path(self, name: str) -> Path:
        return self.pods_dir / f"{name}.json"

    def _env_path(self, name: str) -> Path:
        return self.pods_dir / f"{name}.env"  # not `.json`: `_records` reads those as pods

    def _read_env(self, name: str) -> dict[str, str] | None:
        env: dict[str, str] | None = _read_json(self._env_path(name))
        return env

    @contextlib.contextmanager
    def _pod_locked(self, pod_id: str) -> Iterator[dict[str, Any]]:
        """The pod's record, read again under its name's lock; NotFound when it is gone."""
        record = self._find(pod_id)
        if record is None or record.get("status") == PodStatus.TERMINATED:
            raise NotFound(f"local pod {pod_id} is gone")
        with self._locked(record["name"]):
            record = self._read(record["name"])
            if record is None or record["id"] != pod_id or record.get("status") == PodStatus.TERMINATED:
                raise NotFound(f"local pod {pod_id} is gone")
            yield record

    def _read(self, name: str) -> dict[str, Any] | None:
        record: dict[str, Any] | None = _read_json(self._path(name))
        return record

    def _records(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.pods_dir.glob("*.json")):
            if path.name == "faults.json":
                continue
            try:
                record = json.loads(path.read_text())
            except FileNotFoundError:  # terminated and removed since the glob: not a pod any more
                continue
            except json.JSONDecodeError as exc:  # records are replaced atomically: this one is damaged
                metrics.record_error("cloud", "local_pod_record")
                logger.warning("local pod record %s is not JSON (%s); it is not listed", path, exc)
                continue
            yield record

    def _find(self, pod_id: str) -> dict[str, Any] | None:
        return next((r for r in self._records() if r.get("id") == pod_id), None)

    def _faults_for(self, name: str) -> Iterator[dict[str, Any]]:
        return (faults for glob, faults in self._read_faults().items() if fnmatch.fnmatchcase(name, glob))

    def _read_faults(self) -> dict[str, dict[str, Any]]:
        try:
            data: dict[str, dict[str, Any]] = json.loads((self.pods_dir / "faults.json").read_text())
        except FileNotFoundError:
            return {}
        return data

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        with open(self.pods_dir / f"{name}.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _start_detached(argv: list[str], log_path: Path, *, cwd: Path, env: dict[str, str], name: str) -> int:
    """Start `argv` re-parented to init, in a new session and process group; returns its pid."""
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", _DETACH_SH, "sh", str(log_path), *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            start_new_session=True,  # own session and process group: terminate kills the group
            close_fds=True,
            timeout=_DETACH_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProviderError(f"cannot start local pod {name}: {exc}") from None
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0 or not out.isdigit():
        err = proc.stderr.decode(errors="replace").strip()[:200]
        raise ProviderError(f"cannot start local pod {name}: sh exited {proc.returncode}: {err}")
    return int(out)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _read_json(path: Path) -> Any:
    """The file's JSON, or None when there is no such file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _write_private_json(path: Path, data: Any) -> None:
    """`_write_json` for a file holding secrets: created 0600, so it is never readable by others."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # a dot first: never a pod's name
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()
