"""`ray up` for real: the existing-host path of the README, end to end, on this machine.

The host is this machine, reached the way `ray_cluster.local.yaml` reaches any host: an SSH server on
127.0.0.1:22 (openssh-server and rsync installed by this set-up from Debian packages when missing), a
key made for the test, and a user of its own whose home is a fresh directory (the "host"'s `~`:
venv, env file, Ray's bootstrap config). A Postgres of the test's own listens on 127.0.0.1.

The cluster file is a copy of `ray_cluster.local.yaml` with only what a user edits (head_ip,
ssh_user, ssh_private_key, cluster_name) and, because other Ray instances run on this machine, Ray
ports of its own. The env file on the host is what the README tells a user to write, with local pods
for a trial. Then, as the README's sequence goes: `ray up -y`, `orchestrator task add` over
`ray exec`, the tasks Complete, `ray exec ... orchestrator status` names the leader,
`ray exec ... orchestrator down --terminate-pods`, `ray down -y`, and no process of the host's user
(Ray, the actors, an embedded Postgres, a pod) is left; then the test's sshd and Postgres stop.

Isolation from other Ray instances on this machine: the host user is not root, so its `ray stop`
(in the start commands and in `ray down`) cannot signal anyone else's process; its RAY_TMPDIR (set in
its ~/.bashrc, as on any shared host) keeps its address file apart; its ports are free ones.

Needs root (apt-get, useradd, sshd on port 22) and takes minutes: `make test-cluster`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import free_port
from tests.support.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TASKS = 3
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

pytestmark = [pytest.mark.timeout(1800)]


def _run(args: list[str], *, timeout: float, check: bool = True, log: Path | None = None, **kw: Any) -> str:
    """Run a command; its output (stdout and stderr) is returned and appended to `log`."""
    done = subprocess.run(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False, **kw
    )
    if log is not None:
        with log.open("a") as out:
            shown = re.sub(r"\b[0-9a-f]{64}\b", "<ray auth token>", done.stdout)  # never a secret in the log
            out.write(f"\n$ {' '.join(args)}\n{shown}\n(exit {done.returncode})\n")
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args[:3])} ... exited {done.returncode}:\n{done.stdout[-6000:]}")
    return done.stdout


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _processes_of(uid: int) -> list[str]:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline", "name"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["uids"] and proc.info["uids"].real == uid:
                found.append(f"{proc.info['pid']} {' '.join(proc.info['cmdline'] or [proc.info['name']])[:160]}")
    return found


def _kill_processes_of(uid: int) -> None:
    import psutil

    for proc in psutil.process_iter(["uids"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["uids"] and proc.info["uids"].real == uid:
                proc.kill()


@dataclass
class Host:
    user: str
    uid: int
    home: Path
    key: Path
    database_url: str
    work: Path
    log: Path


def _install_packages(log: Path) -> None:
    """openssh-server and rsync from Debian packages, when missing (apt-get update once)."""
    if (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) and shutil.which("rsync"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], timeout=600, log=log, env=env)
    _run(
        ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server", "rsync"],
        timeout=900,
        log=log,
        env=env,
    )


def _start_postgres(work: Path) -> tuple[str, Any]:
    """A Postgres of the test's own on 127.0.0.1 (trust auth from there, as pgserver's initdb sets it)."""
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    from tests.support.pg_instance import DedicatedPostgres

    pg = DedicatedPostgres(prefix="orchestrator-cluster-pg-")
    pg.start()
    pg.stop()
    port = free_port()
    user = "pgserver" if os.geteuid() == 0 else None
    pg_ctl(
        [
            "-w",
            "-t",
            "60",
            "-o",
            f"-h 127.0.0.1 -p {port}",
            "-o",
            f"-k {pg.pgdata}",
            "-l",
            str(pg.pgdata / "log"),
            "start",
        ],
        pgdata=pg.pgdata,
        user=user,
        timeout=90,
    )
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", pg


def _start_sshd(work: Path, user: str, log: Path) -> subprocess.Popen[bytes]:
    host_key = work / "ssh_host_ed25519_key"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], timeout=60)
    config = work / "sshd_config"
    config.write_text(
        "Port 22\nListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\nPidFile {work / 'sshd.pid'}\n"
        "AuthorizedKeysFile .ssh/authorized_keys\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"AllowUsers {user}\nStrictModes yes\nMaxStartups 100\nMaxSessions 100\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    wait_for(lambda: _port_taken(22) or proc.poll() is not None, timeout_s=30, message="sshd listening on 22")
    assert proc.poll() is None, f"sshd exited at once; see {log}"
    return proc


LOCK = Path("/tmp/orchestrator-cluster-test.lock")


@contextlib.contextmanager
def _one_at_a_time(timeout_s: float = 1500.0) -> Iterator[None]:
    """Port 22 is one per machine: a second run of this test on it (another checkout's `make test`)
    waits for its turn instead of failing."""
    import fcntl

    with LOCK.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"another cluster test held {LOCK} for {timeout_s:.0f}s") from None
                time.sleep(2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("needs root: installs openssh-server and rsync, adds a user, runs sshd on port 22")
    with _one_at_a_time():
        yield from _host()


def _host() -> Iterator[Host]:
    suffix = secrets.token_hex(4)
    work = Path(tempfile.mkdtemp(prefix=f"oc-{suffix}-"))
    work.chmod(0o755)  # the host user's home is inside it: sshd's StrictModes wants no writable parent
    log = work / "cluster-test.log"
    user = f"orch-{suffix}"
    home = work / "home"
    sshd: subprocess.Popen[bytes] | None = None
    pg: Any = None
    uid: int | None = None
    try:
        _install_packages(log)
        wait_for(lambda: not _port_taken(22), 30, "port 22 on 127.0.0.1 free for the host's sshd")
        _run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash", user], timeout=60)
        uid = int(_run(["id", "-u", user], timeout=10).strip())
        _run(["usermod", "-p", "*", user], timeout=30)  # no password, but not locked (sshd refuses locked ones)
        key = work / "id_ed25519"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], timeout=60)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text((work / "id_ed25519.pub").read_text())
        ray_tmp = work / "t"
        ray_tmp.mkdir()
        bashrc = home / ".bashrc"
        # This machine runs other Ray instances: this host's Ray keeps its own temp dir (README).
        bashrc.write_text(f"export RAY_TMPDIR={ray_tmp}\n" + (bashrc.read_text() if bashrc.exists() else ""))
        database_url, pg = _start_postgres(work)
        env_file = home / ".orchestrator.env"
        env_file.write_text(
            "# what the README asks for, with local pods for a trial\n"
            f"export DATABASE_URL='{database_url}'\n"
            "ORCHESTRATOR_PROVIDER__KIND=local\n"
            "ORCHESTRATOR_PROVIDER__LOCAL_BOOT_DELAY_S=1\n"
            "ORCHESTRATOR_SCALING__CYCLE_INTERVAL_S=2\n"
            "ORCHESTRATOR_SCALING__MAX_WORKERS=2\n"
        )
        env_file.chmod(0o600)
        for path in (ssh_dir, ssh_dir / "authorized_keys", bashrc, ray_tmp, env_file):
            os.chown(path, uid, uid)
        sshd = _start_sshd(work, user, log)
        yield Host(user=user, uid=uid, home=home, key=key, database_url=database_url, work=work, log=log)
    finally:
        if uid is not None:
            _kill_processes_of(uid)  # only after a failure is anything of the host user's left
        if sshd is not None:
            sshd.terminate()
            sshd.wait(timeout=30)
        if pg is not None:
            pg.cleanup()
            assert not pg.is_running(), "the test's Postgres is still running"
        if uid is not None:
            _run(["userdel", "--remove", user], timeout=60, check=False)
        for state in Path("/tmp").glob(f"cluster-orch-test-{suffix}*"):
            state.unlink(missing_ok=True)
        if os.environ.get("ORCHESTRATOR_KEEP_CLUSTER_TEST_LOG"):
            print(f"cluster test log kept in {log}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _cluster_file(host: Host) -> tuple[Path, int]:
    """A copy of ray_cluster.local.yaml with what a user edits, plus Ray ports of its own; and the
    dashboard's port."""
    config = yaml.safe_load((ROOT / "ray_cluster.local.yaml").read_text())
    config["cluster_name"] = f"orch-test-{host.user.removeprefix('orch-')}"
    config["provider"]["head_ip"] = "127.0.0.1"
    config["auth"] = {"ssh_user": host.user, "ssh_private_key": str(host.key)}
    dashboard_port = free_port()
    ports = {
        "--port=6379": f"--port={free_port()} --ray-client-server-port={free_port()} "
        f"--dashboard-agent-listen-port={free_port()} --dashboard-agent-grpc-port={free_port()} "
        f"--runtime-env-agent-port={free_port()}",
        "--dashboard-port=8265": f"--dashboard-port={dashboard_port}",
        "--metrics-export-port=8080": f"--metrics-export-port={free_port()}",
    }
    commands = []
    for cmd in config["head_start_ray_commands"]:
        for default, own in ports.items():
            cmd = cmd.replace(default, own)
        commands.append(cmd)
    config["head_start_ray_commands"] = commands
    path = host.work / "ray_cluster.test.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, dashboard_port


def _ray(args: list[str], host: Host, timeout: float, check: bool = True) -> str:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for name in ("RAY_ADDRESS", "DATABASE_URL", "ORCHESTRATOR_CONFIG", "ORCHESTRATOR_ENV_FILE"):
        env.pop(name, None)
    out = _run([str(VENV_BIN / "ray"), *args], timeout=timeout, check=check, log=host.log, cwd=ROOT, env=env)
    return _ANSI.sub("", out)  # `ray exec` runs commands on a terminal: rich colours its output


def _remove_ssh_control_dir(cluster: Path) -> None:
    """`ray up` keeps SSH control sockets in /tmp/ray_ssh_<user hash>/<cluster hash>: this cluster's go."""
    import getpass
    import hashlib

    name = yaml.safe_load(cluster.read_text())["cluster_name"]
    user_dir = Path("/tmp") / f"ray_ssh_{hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]}"
    shutil.rmtree(user_dir / hashlib.sha256(name.encode()).hexdigest()[:10], ignore_errors=True)
    with contextlib.suppress(OSError):
        user_dir.rmdir()  # only when no other cluster's sockets are in it


def _listening_addresses(port: int) -> set[str]:
    import psutil

    return {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}


def _task_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT status, count(*) FROM orchestrator.tasks GROUP BY status").fetchall()
    return {str(status): int(n) for status, n in rows}


def test_ray_up_existing_host_end_to_end(host: Host) -> None:
    cluster, dashboard_port = _cluster_file(host)
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        out = _ray(["up", "-y", "--no-config-cache", str(cluster)], host, timeout=1200)
        timings["ray up"] = time.monotonic() - started
        assert "actor      scaler: created" in out, out[-4000:]

        mark = time.monotonic()
        added = _ray(
            [
                "exec",
                str(cluster),
                f"orchestrator task add --type demo --user u1 --params '{{\"duration_s\": 2}}' --count {TASKS}",
            ],
            host,
            timeout=300,
        )
        ids = re.findall(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\s*$", added, re.MULTILINE)
        assert len(ids) == TASKS, added[-3000:]
        wait_for(
            lambda: _task_counts(host.database_url) == {"Complete": TASKS},
            timeout_s=300,
            interval_s=2,
            message=f"{TASKS} tasks Complete on local pods",
            explain=lambda: str(_task_counts(host.database_url)),
        )
        timings["tasks done"] = time.monotonic() - mark

        status = _ray(["exec", str(cluster), "orchestrator status"], host, timeout=300)
        assert re.search(r"leader \S+ epoch \d+", status), status[-3000:]
        assert "scaler" in status and "none yet" not in status
        # Ray's state API answers with the token on: every actor with its state.
        assert "actor list unavailable" not in status and "ray unreachable" not in status, status[-3000:]
        assert re.search(r"log-shipper\s+│\s+ALIVE", status), status[-3000:]

        # Token sign-in: the head has a token (setup generated it); the dashboard, bound to
        # 127.0.0.1 only, refuses its API without the token and answers with it as a bearer token.
        token = re.findall(
            r"^[0-9a-f]{64}$", _ray(["exec", str(cluster), "ray get-auth-token"], host, timeout=120), re.M
        )
        assert len(token) == 1, "ray get-auth-token printed no token"
        assert _listening_addresses(dashboard_port) == {"127.0.0.1"}
        api = f"http://127.0.0.1:{dashboard_port}/api/v0/actors"
        curl = "curl -s -o /dev/null -w 'http %{http_code}\\n'"
        bare = _ray(["exec", str(cluster), f"{curl} {api}"], host, timeout=120)
        signed = _ray(
            ["exec", str(cluster), f'{curl} -H "Authorization: Bearer $(ray get-auth-token 2>/dev/null)" {api}'],
            host,
            timeout=120,
        )
        assert "http 401" in bare and "http 200" in signed, (bare[-500:], signed[-500:])

        mark = time.monotonic()
        down = _ray(["exec", str(cluster), "orchestrator down --terminate-pods --timeout 120"], host, timeout=300)
        assert "pods left at the provider (local): 0" in down, down[-3000:]
    finally:
        mark = time.monotonic()
        _ray(["down", "-y", str(cluster)], host, timeout=600, check=False)
        timings["ray down"] = time.monotonic() - mark
        _remove_ssh_control_dir(cluster)
        timings["total"] = time.monotonic() - started
        with host.log.open("a") as out:
            out.write(f"\ntimings: {timings}\n")
        print("cluster test timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))

    # Nothing of the host's user is left: no Ray (gcs_server, raylet, dashboard, actors), no
    # embedded Postgres, no pod, no SSH session (the client's ControlPersist lets go within seconds).
    wait_for(
        lambda: not _processes_of(host.uid),
        timeout_s=90,
        interval_s=1,
        message="no process of the host user after `ray down`",
        explain=lambda: "\n".join(_processes_of(host.uid)),
    )
    assert not (host.home / ".orchestrator" / "pgdata").exists(), "an embedded Postgres was started on the host"
