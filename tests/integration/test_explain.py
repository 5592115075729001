"""`orchestrator explain` on the incident's evening, in a real Postgres, through the real CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from orchestrator.cli import app
from store.base import OrchestratorEventKind
from store.postgres import PostgresStore
from tests.support import incident_fixture as incident
from tests.support.fleet_harness import fast_settings, fleet_cleanup
from tests.support.polling import wait_for


@pytest.fixture
def incident_db(database_url: str) -> Iterator[str]:
    store = PostgresStore(database_url, min_size=1, max_size=2)
    try:
        incident.build_incident(store)
    finally:
        store.close()
    yield database_url


def _explain(database_url: str, *args: str) -> Result:
    env = {"DATABASE_URL": database_url, "ORCHESTRATOR_DATABASE__BACKEND": "postgres"}
    return CliRunner().invoke(app, ["explain", *args], env=env)


def explain(database_url: str, *args: str) -> tuple[int, str]:
    """The exit code and what a terminal shows (stdout and stderr together)."""
    result = _explain(database_url, *args)
    return result.exit_code, result.output


def explain_json(database_url: str, *args: str) -> tuple[int, str]:
    """The exit code and stdout alone, where `--json` writes: a log line on stderr (this process's log
    handler, another test's thread) is no part of the document a machine reads."""
    result = _explain(database_url, *args, "--json")
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_at_1755_reports_the_spawn_with_its_inputs_and_the_silence(incident_db: str) -> None:
    code, out = explain(incident_db, "--at", "17:55")
    assert code == 0, out
    assert "Around 2025-10-16 17:55:00 UTC" in out  # the bare time found the incident's day
    # The spawn, its inputs and its reason, and what it caused.
    assert "17:55:06 decision #" in out
    assert f"spawn 1 -> {incident.W_1755A}" in out
    assert "queued 2, claimable 2, in_progress 0, desired 2, capacity 1, need 1" in out
    assert "because: scale_up: spawn 1 because desired 2" in out
    assert f"17:55:06 worker {incident.W_1755A} created" in out
    assert f"17:56:02 worker {incident.W_1755A} promoted to active (56 s spawning)" in out
    # The orchestrator's silence from its last log to the decision, stated plainly.
    assert "ORCHESTRATOR SILENT from 17:35:31 to 17:55:06 (19 min 35 s)" in out
    assert "cycle interval 10 s" in out


def test_at_json_for_machines(incident_db: str) -> None:
    code, out = explain_json(incident_db, "--at", "2025-10-16T17:55:00Z")
    assert code == 0, out
    data = json.loads(out)
    spawn = next(d for d in data["decisions"] if d["at"] == "2025-10-16T17:55:06Z")
    assert spawn["spawned_worker_ids"] == [incident.W_1755A]
    assert spawn["inputs"]["claimable"] == 2 and spawn["inputs"]["capacity"] == 1
    assert [c["to"] for c in spawn["caused"]] == ["spawning", "active"]
    silence = data["silences"][0]
    assert (silence["start"], silence["end"]) == ("2025-10-16T17:35:31Z", "2025-10-16T17:55:06Z")
    # The two 17:42 workers were created while it was silent.
    assert silence["worker_transitions_during"] >= 2


def test_worker_shows_its_whole_life(incident_db: str) -> None:
    code, out = explain(incident_db, "--worker", incident.W_1755A)
    assert code == 0, out
    assert f"Worker {incident.W_1755A}: active" in out
    assert "trace id:           4bf92f3577b34da6a3ce929d0e0e4736" in out
    assert "pod:                e72lqfpbzb0l94" in out
    assert "Started by:" in out and "17:55:06 decision #" in out
    assert "promoted to active (56 s spawning)" in out
    assert "spawning     56 s" in out
    assert f"17:57:06 {incident.TASK_ORCHESTRATOR} travel_orchestrator In Progress" in out
    assert f"17:57:08 {incident.TASK_SEGMENT} travel_segment In Progress" in out


def test_worker_stopped_a_minute_after_promotion_says_why(incident_db: str) -> None:
    code, out = explain_json(incident_db, "--worker", incident.W_1755B)
    assert code == 0, out
    data = json.loads(out)
    assert data["drained_by"]["drain_worker_ids"] == [incident.W_1755B]
    assert "idle 59s" in data["drained_by"]["reasons"][0]
    phases = {p["state"]: p["seconds"] for p in data["phases"]}
    assert phases["spawning"] == 157.0 and phases["active"] == 59.0
    assert data["worker"]["termination_reason"] == "Normal termination"


def test_timeline_reads_like_the_report(incident_db: str) -> None:
    code, out = explain(incident_db, "--since", "17:30", "--until", "18:00")
    assert code == 0, out
    lines = out.splitlines()

    def line_of(fragment: str) -> int:
        return next(i for i, line in enumerate(lines) if fragment in line)

    created = line_of(f"17:55:06 worker {incident.W_1755A} created")
    promoted = line_of(f"17:56:02 worker {incident.W_1755A} promoted to active (56 s spawning)")
    second = line_of(f"17:58:09 worker {incident.W_1755B} promoted to active (2 min 37 s spawning)")
    assert created < promoted < second
    assert line_of(f"17:42:49 worker {incident.W_1742A} created") < created
    silent = line_of("!!17:35:31 orchestrator goes silent: nothing from it for 19 min 35 s")
    assert "worker transition(s) recorded meanwhile" in lines[silent]
    assert "ORCHESTRATOR SILENT from 17:35:31 to 17:55:06" in out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--worker", "gpu-nope"], "'gpu-nope'"),
        (["--at", "25:99"], "'25:99'"),
        (["--at", "yesterday-ish"], "'yesterday-ish'"),
        (["--since", "17:30", "--until", "17:00x"], "'17:00x'"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(incident_db: str, args: list[str], named: str) -> None:
    code, out = explain(incident_db, *args)
    assert code == 2
    assert named in out
    assert len(out.strip().splitlines()) == 1, out
    assert "Traceback" not in out


def test_no_mode_or_two_modes_is_an_error(incident_db: str) -> None:
    assert explain(incident_db)[0] == 2
    code, out = explain(incident_db, "--at", "17:55", "--worker", incident.W_1755A)
    assert code == 2 and "exactly one" in out


def test_unreachable_database_is_one_line_without_the_password() -> None:
    from tests.conftest import free_port

    url = f"postgresql://orch:hunter2-secret@127.0.0.1:{free_port()}/app?connect_timeout=1"
    result = CliRunner().invoke(
        app,
        ["explain", "--at", "17:55"],
        env={
            "DATABASE_URL": url,
            "ORCHESTRATOR_DATABASE__BACKEND": "postgres",
            "ORCHESTRATOR_DATABASE__CONNECT_TIMEOUT_S": "1",
        },
    )
    assert result.exit_code == 2
    assert "127.0.0.1" in result.output
    assert "hunter2-secret" not in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.ray
def test_explain_after_a_run_stopped_by_down_says_stopped_not_silent(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    """The real actors (LogShipper, Scaler) run for a few cycles and are stopped the way `orchestrator
    down` (and the demo) stops them; the database then stays quiet, as after every demo. `explain
    --since` (to now) reports the stop with its reason, and no silence."""
    from actors import names
    from orchestrator import app as wiring
    from orchestrator import control

    settings = fast_settings(database_url, tmp_path)  # cycle 0.5 s
    store = PostgresStore(database_url, min_size=1, max_size=2)
    try:
        begin = store.now()
        with fleet_cleanup(settings, [names.SCALER_NAME, names.LOG_SHIPPER_NAME]):
            wiring.start_actors(settings)
            (start,) = wait_for(
                lambda: [
                    e for e in store.list_orchestrator_events(since=begin) if e.kind is OrchestratorEventKind.STARTED
                ],
                60,
                "the Scaler leads and records its start",
            )
            since = start.at.replace(microsecond=0)  # from its start: the actors' own start-up is no concern here
            wait_for(lambda: len(store.list_system_logs(since=since)) >= 5, 60, "the actors' logs in system_logs")
            control.stop_fleet(settings, terminate_pods=False, timeout_s=30)
        (stop,) = [e for e in store.list_orchestrator_events(since=since) if e.kind is OrchestratorEventKind.STOPPED]
        assert stop.reason == "orchestrator down"
        time.sleep(6.0)  # quiet after the stop: twice the silence threshold below
        # Without the stop record this quiet is a silence: the database finds the gap.
        gaps = store.explain_silences(since, store.now(), 3.0)
        assert gaps.first_after is None and (gaps.last_inside or since) < store.now() - timedelta(seconds=3)
        code, out = explain(database_url, "--since", since.strftime("%Y-%m-%dT%H:%M:%SZ"), "--silence-threshold", "3")
        assert code == 0, out
        assert "SILENT" not in out, out
        assert f"Orchestrator stopped at {stop.at:%H:%M:%S} (orchestrator down); not started again since" in out
        assert "orchestrator started (leads with epoch" in out and "orchestrator stopped (orchestrator down" in out
        code, out = explain_json(
            database_url, "--since", since.strftime("%Y-%m-%dT%H:%M:%SZ"), "--silence-threshold", "3"
        )
        data = json.loads(out)
        assert data["silences"] == [] and [s["reason"] for s in data["stops"]] == ["orchestrator down"]
        assert data["query"]["until"] >= stop.at.isoformat()[:19]  # --since alone runs to now
    finally:
        store.close()


@pytest.mark.ray
def test_sigterm_of_the_scalers_process_is_recorded_as_a_stop(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    """`ray stop`, a node going down or a `kill` sends SIGTERM: the Scaler stops cleanly and records it,
    and Ray restarts it (max_restarts=-1), which records a start again."""
    import os
    import signal

    from actors import remote
    from tests.support.fleet_harness import actor_pid, unique_name

    settings = fast_settings(database_url, tmp_path)
    store = PostgresStore(database_url, min_size=1, max_size=2)
    name = unique_name("scaler-sigterm")
    try:
        begin = store.now()
        with fleet_cleanup(settings, [name]):
            remote.get_or_create_scaler(settings, name=name, probe_log_shipper=False)

            def runs(kind: OrchestratorEventKind) -> list[Any]:
                return [e for e in store.list_orchestrator_events(since=begin) if e.kind is kind]

            wait_for(lambda: runs(OrchestratorEventKind.STARTED), 60, "the Scaler leads and records its start")
            pid = wait_for(lambda: actor_pid(name), 30, "the Scaler's pid")
            os.kill(pid, signal.SIGTERM)
            (stop,) = wait_for(lambda: runs(OrchestratorEventKind.STOPPED), 60, "the stop recorded")
            assert stop.reason.startswith("SIGTERM")
            wait_for(lambda: len(runs(OrchestratorEventKind.STARTED)) >= 2, 60, "restarted by Ray, it starts again")
    finally:
        store.close()


class _NoLifecycles:
    """The Scaler's WorkerLifecycle directory for a run with no work: no lifecycle is ever needed."""

    def __len__(self) -> int:
        return 0

    def ensure(self, worker_id: str) -> None:
        raise AssertionError(f"no worker expected, got {worker_id}")

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None:
        raise AssertionError(f"no worker expected, got {worker_id}")

    def keep_only(self, worker_ids: set[str]) -> None:
        return None


def test_a_standby_taking_over_after_a_clean_stop_ends_the_stop(database_url: str, tmp_path: Path) -> None:
    """Two orchestrators on one database (plain Scalers, real Postgres): the leader stops cleanly, the
    standby takes the lease. The record reads stop, then start, and explain says "started again"."""
    from actors.scaler import Scaler

    settings = fast_settings(database_url, tmp_path)
    store = PostgresStore(database_url, min_size=1, max_size=2)
    begin = store.now()
    a = Scaler(settings, holder="host-a/scaler", name="scaler-a", lifecycles=_NoLifecycles())
    b: Scaler | None = None
    try:
        wait_for(lambda: a.status()["role"] == "leader", 20, "A leads")
        b = Scaler(settings, holder="host-b/scaler", name="scaler-b", lifecycles=_NoLifecycles())
        wait_for(lambda: b is not None and b.status()["role"] == "standby", 20, "B stands by")
        a.stop("orchestrator down on host a")
        wait_for(lambda: b is not None and b.status()["role"] == "leader", 20, "B takes the released lease")
        events = [(e.kind.value, e.holder) for e in store.list_orchestrator_events(since=begin)]
        assert events == [("started", a.holder), ("stopped", a.holder), ("started", b.holder)], events
        code, out = explain_json(database_url, "--since", begin.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert code == 0, out
        (stop,) = json.loads(out)["stops"]
        assert stop["reason"] == "orchestrator down on host a" and stop["started_again_at"] is not None
    finally:
        a.stop()
        if b is not None:
            b.stop()
        store.close()


@pytest.mark.ray
def test_down_with_no_scaler_running_records_the_stop(
    ray_session: dict[str, Any], database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator import control
    from tests.support.fleet_harness import unique_name

    settings = fast_settings(database_url, tmp_path)
    store = PostgresStore(database_url, min_size=1, max_size=2)
    try:
        begin = store.now()
        said: list[str] = []
        control.stop_fleet(
            settings, terminate_pods=False, timeout_s=5, scaler_name=unique_name("no-scaler"), echo=said.append
        )
        (stop,) = store.list_orchestrator_events(since=begin)
        assert stop.kind is OrchestratorEventKind.STOPPED and stop.reason == "orchestrator down: no Scaler was running"
        assert not any(line.startswith("warning") for line in said), said
        # `status` says so too.
        data = control.collect_status(settings)
        assert data["last_start_or_stop"]["reason"] == "orchestrator down: no Scaler was running"
        control.render_status(data)
        printed = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
        assert "orchestrator stopped at" in printed and "(orchestrator down: no Scaler was running)" in printed
    finally:
        store.close()
