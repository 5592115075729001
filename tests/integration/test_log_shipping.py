"""The LogShipper on a real Ray with a real Postgres: nothing acknowledged is ever lost, nothing fails silently.

Producers are Ray actors that log through the real ShippingLogHandler; the LogShipper is the real
actor from actors/remote.py. The database goes away through a loopback TCP proxy in front of the
test's Postgres (stopping the proxy refuses connections and cuts the open ones, as a stopped server
does, without touching the session's server).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config.settings import OrchestratorSettings

pytestmark = pytest.mark.ray

RUNPOD_KEY = "rpa_TESTKEYTESTKEYTESTKEY0001"
SERVICE_KEY = "service-role-key-ABCDEF0123456789"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class TcpProxy:
    """Loopback TCP -> Postgres (unix socket or TCP). stop() refuses new and cuts open connections."""

    def __init__(self, target_url: str) -> None:
        params = psycopg.conninfo.conninfo_to_dict(target_url)
        host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
        self._target: tuple[int, Any] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/") else (socket.AF_INET, (host, port))
        )
        self.url = target_url
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port = 0

    def proxied_url(self) -> str:
        return psycopg.conninfo.make_conninfo(self.url, host="127.0.0.1", port=str(self.port))

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(self._target[0], socket.SOCK_STREAM)
            try:
                upstream.connect(self._target[1])
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def make_settings(database_url: str, tmp: Path, **shipping: Any) -> OrchestratorSettings:
    return OrchestratorSettings(
        database={
            "url": database_url,
            "supabase_service_role_key": SERVICE_KEY,  # unused (url wins) but a secret to keep out of logs
            "connect_timeout_s": 1.0,
            "request_retries": 0,
            "pool_max_size": 2,
        },
        provider={"runpod_api_key": RUNPOD_KEY},
        log_shipping={
            "spool_dir": tmp / "spool",
            "fallback_file": tmp / "fallback.jsonl",
            "dead_letter_file": tmp / "dead-letter.jsonl",
            "flush_interval_s": 0.2,
            "stale_flush_alarm_s": 3.0,
            "health_timeout_s": 2.0,
            **shipping,
        },
    )


@pytest.fixture
def shipper_factory(ray_session: dict[str, Any]) -> Iterator[Callable[[OrchestratorSettings], Any]]:
    import ray

    from actors import remote

    created: list[Any] = []

    def create(settings: OrchestratorSettings) -> Any:
        handle = remote.get_or_create_log_shipper(settings)
        ray.get(handle.getpid.remote(), timeout=60)
        created.append(handle)
        return handle

    yield create
    for handle in created:
        with contextlib.suppress(Exception):
            ray.kill(handle, no_restart=True)

    def gone() -> bool:
        try:
            ray.get_actor("log-shipper", namespace="gpu-orchestrator")
        except ValueError:
            return True
        return False

    wait_until(gone, 30, what="the LogShipper name to be free")


def _producer_class() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class Producer:
        """Logs through the real handler at a steady rate; reports what was acknowledged."""

        def __init__(self, settings: OrchestratorSettings, name: str) -> None:
            from telemetry.log_handler import install_log_handler

            self.handler = install_log_handler(
                settings, source_type="orchestrator", source_id=name, keep_acked_ids=True
            )
            self.log = __import__("logging").getLogger(f"producer.{name}")
            self.name = name
            self.stop_flag = False

        def run(self, rate: float, seconds: float, message: str = "record") -> int:
            start = time.monotonic()
            sent = 0
            while time.monotonic() - start < seconds and not self.stop_flag:
                due = int((time.monotonic() - start) * rate)
                while sent < due:
                    self.log.info("%s %s #%d", message, self.name, sent, extra={"cycle_number": sent})
                    sent += 1
                time.sleep(0.005)
            return sent

        def finish(self, timeout: float) -> dict[str, Any]:
            self.handler.flush(timeout=timeout)
            stats = self.handler.stats()
            stats["acked_ids"] = list(self.handler.acked_ids or [])
            return stats

        def log_one(self, level: str, message: str) -> None:
            self.log.log(__import__("logging").getLevelName(level), message)

    return Producer


def _ids_in_db(database_url: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM system_logs").fetchall()]


def test_sigkill_under_load_loses_nothing_acknowledged(
    database_url: str, tmp_path: Path, shipper_factory: Callable[[OrchestratorSettings], Any]
) -> None:
    import ray

    settings = make_settings(database_url, tmp_path)
    shipper = shipper_factory(settings)
    pid = ray.get(shipper.getpid.remote())
    producer_cls = _producer_class()
    producers = [producer_cls.remote(settings, f"p{i}") for i in range(2)]
    runs = [p.run.remote(2500, 4.0) for p in producers]  # 5,000 records a second in all

    wait_until(lambda: ray.get(shipper.health.remote())["spooled"] > 3000, 20, what="load to reach the shipper")
    os.kill(pid, signal.SIGKILL)
    new_pid = wait_until(lambda: _answering_pid(shipper, pid), 30, what="the LogShipper to restart")
    assert new_pid != pid

    emitted = sum(ray.get(runs, timeout=60))
    reports = ray.get([p.finish.remote(30.0) for p in producers], timeout=90)
    acked = [i for r in reports for i in r["acked_ids"]]
    assert len(acked) == len(set(acked))
    assert sum(r["dropped"].get(k, 0) for r in reports for k in r["dropped"]) == 0
    assert len(acked) + sum(r["fallback"] for r in reports) == emitted

    health = ray.get(shipper.flush_now.remote(30.0), timeout=40)
    assert health["records_pending"] == 0, health
    in_db = _ids_in_db(database_url)
    assert len(in_db) == len(set(in_db))  # exactly once
    missing = set(acked) - set(in_db)
    assert not missing, f"{len(missing)} acknowledged records are not in system_logs"
    assert health["rejected"] == 0
    for p in producers:
        ray.kill(p)


def _answering_pid(shipper: Any, old_pid: int) -> int | None:
    import ray

    try:
        pid = ray.get(shipper.getpid.remote(), timeout=2)
    except Exception:
        return None
    return pid if pid != old_pid else None


def test_database_outage_spools_shows_fallback_and_lands_once_back(
    database_url: str, tmp_path: Path, shipper_factory: Callable[[OrchestratorSettings], Any]
) -> None:
    import ray

    from telemetry.shipper_health import assess

    proxy = TcpProxy(database_url).start()
    try:
        settings = make_settings(proxy.proxied_url(), tmp_path)
        shipper = shipper_factory(settings)
        producer = _producer_class().remote(settings, "outage")
        ray.get(producer.run.remote(500, 0.5, "before"))
        wait_until(lambda: ray.get(shipper.health.remote())["shipped"] > 0, 20, what="a first flush")

        proxy.stop()  # the database is gone
        outage = producer.run.remote(2000, 8.0, "during-outage")
        health = wait_until(
            lambda: (
                (h := ray.get(shipper.health.remote()))["consecutive_failures"] > 0 and h["records_pending"] > 0 and h
            ),
            20,
            what="the shipper to notice the outage",
        )
        fallback = tmp_path / "fallback.jsonl"
        wait_until(
            lambda: fallback.exists() and "during-outage" in fallback.read_text(), 20, what="the fallback to show it"
        )
        ray.get(outage, timeout=30)
        shipped_during = ray.get(shipper.health.remote())["shipped"]
        # Flushing stalls while the database fails; the verdict says so without asking for a restart.
        health = ray.get(shipper.health.remote())
        verdict = assess(health, health["now"], settings)
        assert not verdict.ok and not verdict.restart, verdict
        waiting = health["records_pending"]
        assert waiting >= 10_000 and health["shipped"] == shipped_during

        proxy = _restart_proxy_on(settings, database_url)
        report = ray.get(producer.finish.remote(30.0), timeout=40)
        health = ray.get(shipper.flush_now.remote(30.0), timeout=40)
        assert health["records_pending"] == 0, health
        in_db = _ids_in_db(database_url)
        assert len(in_db) == len(set(in_db))
        assert set(report["acked_ids"]) <= set(in_db)
        assert health["consecutive_failures"] == 0
        # Every record that waited was shown in the fallback, once.
        shown = [json.loads(line) for line in fallback.read_text().splitlines()]
        shown_ids = [r["id"] for r in shown if r.get("fallback_reason", "").startswith("database unreachable")]
        assert len(shown_ids) == len(set(shown_ids)) and len(shown_ids) >= waiting
        ray.kill(producer)
    finally:
        proxy.stop()


def _restart_proxy_on(settings: OrchestratorSettings, database_url: str) -> TcpProxy:
    """A new proxy on the port the shipper's settings point at (the database is back)."""
    assert settings.database.url is not None
    port = int(psycopg.conninfo.conninfo_to_dict(settings.database.url.get_secret_value())["port"])
    proxy = TcpProxy(database_url)
    proxy.port = port
    return wait_until(lambda: _try_start(proxy), 10, what="the proxy port to be free again")


def _try_start(proxy: TcpProxy) -> TcpProxy | None:
    try:
        return proxy.start()
    except OSError:
        return None


def test_hung_flush_is_detected_and_restarted(
    database_url: str, tmp_path: Path, shipper_factory: Callable[[OrchestratorSettings], Any]
) -> None:
    import ray

    from telemetry.shipper_health import probe_and_heal

    settings = make_settings(database_url, tmp_path, stale_flush_alarm_s=2.0)
    shipper = shipper_factory(settings)
    pid = ray.get(shipper.getpid.remote())
    with psycopg.connect(database_url) as locker:
        locker.execute("BEGIN")
        locker.execute("LOCK TABLE system_logs IN ACCESS EXCLUSIVE MODE")
        ids = [uuid.uuid4().hex for _ in range(50)]
        ray.get(shipper.ship.remote([_record(i, "waits behind a lock") for i in ids]))
        wait_until(lambda: ray.get(shipper.health.remote())["flushing_since"] is not None, 10, what="a flush")

        verdict = wait_until(
            lambda: (v := probe_and_heal(shipper, settings)).restart and v, 20, what="the probe to restart it"
        )
        assert "hung" in verdict.reason
        wait_until(lambda: _answering_pid(shipper, pid), 30, what="the restarted LogShipper")
        locker.execute("ROLLBACK")
    text = (tmp_path / "fallback.jsonl").read_text()
    assert "LogShipper restarted by the health probe" in text and "hung" in text
    health = ray.get(shipper.flush_now.remote(20.0), timeout=30)
    assert health["records_pending"] == 0 and health["replayed"] >= 50
    assert set(ids) <= set(_ids_in_db(database_url))


def _record(record_id: str, message: str, level: str = "INFO") -> dict[str, Any]:
    return {
        "id": record_id,
        "at": time.time(),
        "level": level,
        "logger": "test",
        "message": message,
        "source_type": "orchestrator",
        "source_id": "test",
    }


def test_rejected_rows_go_to_dead_letter_and_secrets_nowhere(
    database_url: str, tmp_path: Path, shipper_factory: Callable[[OrchestratorSettings], Any]
) -> None:
    import ray

    settings = make_settings(database_url, tmp_path)
    shipper = shipper_factory(settings)
    good, bad = uuid.uuid4().hex, uuid.uuid4().hex
    ray.get(shipper.ship.remote([_record(good, "fine"), _record(bad, "odd level", level="TRACE")]))
    producer = _producer_class().remote(settings, "secrets")
    ray.get(producer.log_one.remote("INFO", f"calling RunPod with {RUNPOD_KEY}"))
    ray.get(producer.log_one.remote("WARNING", f"supabase key {SERVICE_KEY} and password=hunter2hunter2"))
    ray.get(producer.log_one.remote("ERROR", f"dsn {settings.database.url.get_secret_value()}"))  # type: ignore[union-attr]
    ray.get(producer.finish.remote(20.0))
    health = ray.get(shipper.flush_now.remote(20.0), timeout=30)

    assert health["rejected"] == 1 and health["shipped"] >= 4, health
    dead = [json.loads(line) for line in (tmp_path / "dead-letter.jsonl").read_text().splitlines()]
    assert [d["id"] for d in dead] == [bad]
    assert "TRACE" in dead[0]["dead_letter_reason"]
    ids = set(_ids_in_db(database_url))
    assert good in ids and bad not in ids

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT message, attributes::text FROM system_logs").fetchall()
    captured = "\n".join(f"{m} {a}" for m, a in rows)
    for path in tmp_path.rglob("*.jsonl"):
        captured += path.read_text()
    assert "calling RunPod with ***" in captured
    for secret in (RUNPOD_KEY, SERVICE_KEY, "hunter2hunter2"):
        assert secret not in captured
    ray.kill(producer)
