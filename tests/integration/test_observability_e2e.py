"""Observability of one real fleet run: the lifecycle trace across a SIGKILL, no secret anywhere, real metrics.

One run (module fixture `run`) on real parts: the session's Ray, a Postgres database of its own
reached as a role with a password, the real LogShipper, Scaler and WorkerLifecycle actors, a
LocalProvider pod running the reference worker, and every process exporting spans through the real
OTLP HTTP exporter to the loopback `OtlpReceiver`. The config holds a RunPod API key, a Supabase
service-role key and the database password. One task of a few seconds; the WorkerLifecycle's
process is SIGKILLed while the worker is active and running it; the fleet scales back to zero.

Then, from what the run left behind:
1. the trace: one trace id per worker (the one in `workers.trace_context`), every parent a received
   span, the phases in order, the worker's task span inside, spans from every process (Scaler, both
   lifecycle processes, the pod), and the Scaler's decision span linking to the anchor;
2. secrets: none of the three values in system_logs, the fallback / dead-letter / spool files and
   everything else in the state dir, any received span, `status` (text and JSON), `explain`, an
   error on an unreachable database, the Ray actor reprs and the pod env audit (`Pod.raw`);
3. metrics: the Ray Prometheus endpoint shows the series the real Scaler and WorkerLifecycle
   recorded during the run.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray
from pydantic import SecretStr
from ray.util.state import list_actors, list_workers
from typer.testing import CliRunner

from actors import names, remote
from cloud.local import LocalProvider
from config.settings import OrchestratorSettings
from fleet.models import WorkerState
from orchestrator import control
from orchestrator.cli import app
from store.base import NewTask, TaskStatus
from store.postgres import PostgresStore
from telemetry import tracing
from tests.conftest import create_database, free_port
from tests.support.fleet_harness import NAMESPACE, explain_fleet, fast_settings, fleet_cleanup, sigkill, unique_name
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.polling import wait_for
from tests.support.prometheus import scrape as _scrape
from tests.support.prometheus import series as _series

pytestmark = pytest.mark.ray

TASK_SECONDS = 6.0


@dataclass
class Run:
    settings: OrchestratorSettings
    database_url: str  # with the password
    secrets: dict[str, str]
    scaler_name: str
    scaler_worker_id: str  # Ray's WorkerId of the Scaler's process: the label of its metric series
    worker_id: str
    trace_context: str
    killed_pid: int
    restarted_pid: int
    gpu_type: str | None
    receiver: OtlpReceiver
    spans: list[ReceivedSpan]
    pod_raw: dict[str, Any]
    pod_env_keys: list[str]
    actor_reprs: list[str]
    captured: dict[str, str] = field(default_factory=dict)  # what -> text, scanned for secrets


def _cli(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=env)
    return result.exit_code, result.output + (repr(result.exception) if result.exception else "")


def _fresh_log_shipper(settings: OrchestratorSettings) -> Any:
    """This run's LogShipper (the name is cluster-wide: end whatever another test left first)."""
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(names.LOG_SHIPPER_NAME, namespace=NAMESPACE), no_restart=True)

    def free() -> bool:
        try:
            ray.get_actor(names.LOG_SHIPPER_NAME, namespace=NAMESPACE)
        except ValueError:
            return True
        return False

    wait_for(free, 30, "the LogShipper name to be free")
    handle = remote.get_or_create_log_shipper(settings)
    ray.get(handle.getpid.remote(), timeout=60)
    return handle


def _role_with_password(pg_server_url: str, database_url: str, password: str) -> str:
    """A login role with a password on the test server, and a DATABASE_URL that connects as it."""
    role = f"orch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    host = str(params.get("host") or "")
    where = (
        f"@/{params['dbname']}?host={host}"
        if host.startswith("/")
        else f"@{host}:{params.get('port')}/{params['dbname']}"
    )
    return f"postgresql://{role}:{password}{where}"


@pytest.fixture(scope="module")
def run(
    ray_session: dict[str, Any], pg_server_url: str, pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    secrets = {
        "runpod api key": "rpa_" + uuid.uuid4().hex.upper() + "Q7",
        "supabase service-role key": (
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIiwibiI6IjEifQ." + uuid.uuid4().hex
        ),
        "database password": "Pw" + uuid.uuid4().hex[:20],
    }
    database_url = _role_with_password(
        pg_server_url, create_database(pg_server_url, pg_template), secrets["database password"]
    )
    state_dir = tmp_path_factory.mktemp("observability")
    receiver = OtlpReceiver().start()
    base = fast_settings(database_url, state_dir, max_workers=1, idle_timeout_s=1.0, scale_down_stabilization_s=1.0)
    settings = base.model_copy(
        update={
            "database": base.database.model_copy(
                update={"supabase_service_role_key": SecretStr(secrets["supabase service-role key"])}
            ),
            "provider": base.provider.model_copy(update={"runpod_api_key": SecretStr(secrets["runpod api key"])}),
            "telemetry": base.telemetry.model_copy(update={"otlp_endpoint": receiver.endpoint}),
        }
    )
    scaler_name = unique_name("scaler-obs")
    store = PostgresStore(database_url, min_size=1, max_size=2)
    provider = LocalProvider(state_dir)
    shipper = None
    try:
        with fleet_cleanup(settings, [scaler_name]):
            shipper = _fresh_log_shipper(settings)
            (task_id,) = store.insert_tasks(
                [NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": TASK_SECONDS})]
            )
            scaler = remote.get_or_create_scaler(settings, name=scaler_name, probe_log_shipper=False)

            def explain() -> str:
                return f"{explain_fleet(store)}\nscaler: {ray.get(scaler.status.remote(), timeout=10)}"

            busy = wait_for(
                lambda: [
                    w for w in store.list_workers() if w.status is WorkerState.ACTIVE and w.tasks_in_progress == 1
                ],
                90,
                "an active worker running the task",
                interval_s=0.1,
                explain=explain,
            )[0]
            pod = provider.get(busy.pod_id)
            pod_record = json.loads((provider.pods_dir / f"{busy.id}.json").read_text())
            lifecycle = ray.get_actor(names.worker_actor_name(busy.id), namespace=NAMESPACE)
            killed = int(ray.get(lifecycle.pid.remote(), timeout=30))
            sigkill(killed)  # mid-task: the lifecycle's open `active` span dies with it
            restarted = wait_for(
                lambda: (pid := ray.get(lifecycle.pid.remote(), timeout=5)) != killed and pid,
                60,
                "the WorkerLifecycle restarted by Ray",
            )
            # The state API of this session's Ray (other Ray instances may run on this machine).
            state_api = f"http://{ray_session['context'].dashboard_url}"
            scaler_pid = int(ray.get(scaler.pid.remote(), timeout=10))
            (scaler_worker,) = list_workers(address=state_api, filters=[("pid", "=", scaler_pid)], detail=True)
            actor_reprs = [
                f"{a.name} {a.class_name} {a.repr_name}"
                for a in list_actors(address=state_api, detail=True, limit=10_000)
                if a.ray_namespace == NAMESPACE and a.state == "ALIVE"
            ]
            wait_for(
                lambda: (t := store.get_task(task_id)) is not None and t.status == TaskStatus.COMPLETE,
                90,
                "the task completes",
                explain=explain,
            )
            # The Scaler's view, while it runs: status as the CLI builds it, for this run's Scaler.
            status_data = json.dumps(control.collect_status(settings, scaler_name=scaler_name), default=str)
            wait_for(lambda: store.list_workers() == [], 90, "the fleet back to zero", explain=explain)
            row = store.get_worker(busy.id)
            assert row is not None and row.trace_context
            trace_id = row.trace_context.split("-")[1]
            spans = receiver.wait_for(
                lambda got: (
                    any(s.name == tracing.END_SPAN and s.trace_id == trace_id for s in got)
                    and any(s.name == "worker.task" and s.trace_id == trace_id for s in got)
                    and any(s.name == tracing.DECISION_SPAN and any(ln[0] == trace_id for ln in s.links) for s in got)
                ),
                timeout=30,
            )
            # Every log record of the run in system_logs: flush the handlers' buffers, then the spool.
            wait_for(
                lambda: (
                    ray.get(shipper.flush_now.remote(), timeout=20) is not None
                    and _source_types(database_url) >= {"orchestrator", "worker"}
                ),
                30,
                "records of the actors and of the worker in system_logs",
            )
            env = {
                "DATABASE_URL": database_url,
                "ORCHESTRATOR_DATABASE__BACKEND": "postgres",
                "RUNPOD_API_KEY": secrets["runpod api key"],
                "SUPABASE_SERVICE_ROLE_KEY": secrets["supabase service-role key"],
                "ORCHESTRATOR_PROVIDER__KIND": "local",
                "ORCHESTRATOR_STATE_DIR": str(state_dir),
            }
            captured = {"status (collect_status, this run's Scaler)": status_data}
            for args in (["status"], ["status", "--json"], ["explain", "--worker", busy.id], ["explain", "--json"]):
                code, out = _cli(args, env)
                assert out.strip(), f"{args} printed nothing (exit {code})"
                captured[" ".join(args)] = out
            unreachable = {
                **env,
                "DATABASE_URL": f"postgresql://orch:{secrets['database password']}@127.0.0.1:{free_port()}/nowhere",
                "ORCHESTRATOR_DATABASE__CONNECT_TIMEOUT_S": "1",
            }
            for args in (["status"], ["explain", "--worker", busy.id], ["migrate"]):
                code, out = _cli(args, unreachable)
                assert code != 0, f"{args} on an unreachable database exited 0: {out}"
                captured[f"{' '.join(args)} (unreachable database)"] = out
            captured["system_logs"] = _system_logs(database_url)
            yield Run(
                settings=settings,
                database_url=database_url,
                secrets=secrets,
                scaler_name=scaler_name,
                scaler_worker_id=scaler_worker.worker_id,
                worker_id=busy.id,
                trace_context=row.trace_context,
                killed_pid=killed,
                restarted_pid=int(restarted),
                gpu_type=row.gpu_type,
                receiver=receiver,
                spans=spans,
                pod_raw=dict(pod.raw),
                pod_env_keys=list(pod_record.get("env_keys", [])),
                actor_reprs=actor_reprs,
                captured=captured,
            )
    finally:
        if shipper is not None:
            with contextlib.suppress(Exception):
                ray.kill(shipper, no_restart=True)
        store.close()
        receiver.stop()


def _source_types(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        return {r[0] for r in conn.execute("SELECT DISTINCT source_type FROM system_logs")}


def _system_logs(database_url: str) -> str:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute("SELECT * FROM system_logs")
        columns = [c.name for c in cur.description or []]
        return "\n".join(repr(dict(zip(columns, r, strict=True))) for r in cur)


# --- 1. the lifecycle trace ----------------------------------------------------------------------


def test_one_trace_per_lifecycle_across_a_sigkilled_lifecycle(run: Run) -> None:
    trace_id = run.trace_context.split("-")[1]
    anchor_id = run.trace_context.split("-")[2]
    received = run.receiver.spans()
    mine = [
        s
        for s in received
        if s.resource.get("orchestrator.identity") == run.worker_id or (s.attributes.get("worker.id") == run.worker_id)
    ]
    assert mine and {s.trace_id for s in mine} == {trace_id}, "every span of the worker is in its one trace"
    lifecycle = sorted(run.receiver.spans(trace_id), key=lambda s: s.start_ns)
    ids = {s.span_id for s in received}

    anchor = next(s for s in lifecycle if s.name == tracing.ANCHOR_SPAN)
    assert anchor.span_id == anchor_id and anchor.parent_span_id is None
    orphans = [(s.name, s.parent_span_id) for s in received if s.parent_span_id and s.parent_span_id not in ids]
    assert not orphans, f"spans pointing at a parent never received: {orphans}"

    # Phases in order (consecutive repeats merged: the restarted lifecycle reopens `active`).
    phases: list[str] = []
    for s in lifecycle:
        if s.name in tracing.PHASES and (not phases or phases[-1] != s.name):
            phases.append(s.name)
    assert phases[:3] == ["provision", "boot", "active"], phases
    assert phases[3:] and set(phases[3:]) <= {"drain", "terminate"} and phases[-1] == "terminate", phases
    end = next(s for s in lifecycle if s.name == tracing.END_SPAN)
    assert end is lifecycle[-1] or end.start_ns >= max(s.start_ns for s in lifecycle if s.name in tracing.PHASES)
    assert end.attributes["outcome"] == "ok", end.attributes
    moves = [s.attributes["to"] for s in lifecycle if s.name == tracing.TRANSITION_SPAN]
    assert moves[0] == "active" and moves[-1] == "terminated", moves

    # The worker's task span: in the trace, a child of the anchor, from the pod's process.
    tasks = [s for s in lifecycle if s.name == "worker.task"]
    assert len(tasks) == 1 and tasks[0].parent_span_id == anchor_id
    assert tasks[0].resource.get("orchestrator.component") == "worker"
    active = [s for s in lifecycle if s.name == "active"]
    assert active and tasks[0].end_ns >= max(s.start_ns for s in active), "the task ran while the worker was active"

    # The endpoint reached every process: the Scaler, both lifecycle processes, the pod's worker.
    pids = {
        s.resource.get("process.pid")
        for s in lifecycle
        if s.resource.get("orchestrator.component") == "worker-lifecycle"
    }
    assert {run.killed_pid, run.restarted_pid} <= pids, (pids, run.killed_pid, run.restarted_pid)
    components = {s.resource.get("orchestrator.component") for s in lifecycle}
    assert {"scaler", "worker-lifecycle", "worker"} <= components, components
    assert {"OTEL_EXPORTER_OTLP_ENDPOINT", "TRACEPARENT"} <= set(run.pod_env_keys), run.pod_env_keys

    # The Scaler's decision span links to the anchor (and the anchor back to it).
    decisions = [
        s
        for s in received
        if s.name == tracing.DECISION_SPAN and (trace_id, anchor_id) in [(t, sid) for t, sid, _ in s.links]
    ]
    assert len(decisions) == 1 and decisions[0].resource.get("orchestrator.identity") == run.scaler_name
    assert (decisions[0].trace_id, decisions[0].span_id) in [(t, sid) for t, sid, _ in anchor.links]
    assert not run.receiver.errors


# --- 2. no secret anywhere -------------------------------------------------------------------------


def _state_files(run: Run) -> dict[str, str]:
    """Every file the run left in its state dir: fallback, dead letters, spool, pod records and logs."""
    out = {}
    for path in sorted(Path(run.settings.state_dir).rglob("*")):
        if path.is_file():
            out[f"file {path.relative_to(run.settings.state_dir)}"] = path.read_bytes().decode("utf-8", "replace")
    return out


def test_no_secret_in_logs_spans_status_errors_actors_or_pods(run: Run) -> None:
    spans = run.receiver.spans()
    captured = {
        **run.captured,
        **_state_files(run),
        "spans": "\n".join(
            repr((s.name, s.attributes, s.events, s.resource, [ln[2] for ln in s.links])) for s in spans
        ),
        "ray actor reprs": "\n".join(run.actor_reprs),
        "Pod.raw": json.dumps(run.pod_raw, default=str),
    }
    shipping = run.settings.log_shipping
    assert any(k.startswith("file ") and "spool" in k for k in captured) or shipping.spool_dir.exists()
    assert "fallback" in shipping.fallback_file.name  # scanned when present (see _state_files)
    assert captured["system_logs"].count("\n") > 10, "the run logged through the LogShipper"
    assert len(spans) > 10 and run.actor_reprs
    leaks = [
        f"{secret_name} in {where}: ...{text[max(0, text.find(value) - 80) : text.find(value) + 20]!r}..."
        for where, text in captured.items()
        for secret_name, value in run.secrets.items()
        if value in text
    ]
    print("\n".join(f"scanned {where}: {len(text)} chars" for where, text in captured.items()))
    assert not leaks, "\n".join(leaks)
    # The unreachable-database errors still say what failed, only without the password.
    unreachable = run.captured["status (unreachable database)"]
    assert "127.0.0.1" in unreachable or "database" in unreachable.lower()


# --- 3. the Ray metrics of the real actors -----------------------------------------------------------


def test_metrics_recorded_by_the_real_scaler_and_lifecycle(run: Run, ray_session: dict[str, Any]) -> None:
    # Series of the run's own Scaler process (Ray labels each series with the recording WorkerId).
    scaler = {"WorkerId": run.scaler_worker_id}
    expected = {
        "orchestrator_workers": {**scaler, "state": "active"},
        "orchestrator_tasks": {**scaler, "kind": "claimable"},
        "orchestrator_spawns": {**scaler, "reason": "scale_up"},
        "orchestrator_cycle_duration_seconds": scaler,
        "orchestrator_breaker_state": {**scaler, "state": "closed"},
        # Recorded when the worker was promoted: the lifecycle that saw it was SIGKILLed right after.
        "orchestrator_boot_time_seconds": {**scaler, "gpu_type": run.gpu_type or "unknown"},
    }

    def missing(text: str) -> list[str]:
        return [
            name
            for name, labels in expected.items()
            if not any(labels.items() <= series.items() for series in _series(text, name))
        ]

    def explain() -> str:
        text = _scrape(ray_session["metrics_port"])
        lines = [line for line in text.splitlines() if line.startswith("ray_orchestrator")]
        return f"missing {missing(text)} (Scaler WorkerId {run.scaler_worker_id})\n" + "\n".join(lines)

    text = wait_for(
        lambda: (t := _scrape(ray_session["metrics_port"])) and not missing(t) and t,
        30,
        "the real Scaler's series on the metrics endpoint",
        interval_s=1.0,
        explain=explain,
    )
    spawned = [s for s in _series(text, "orchestrator_spawns_total") if s.get("WorkerId") == run.scaler_worker_id]
    assert spawned or _series(text, "orchestrator_spawns")
    boot = re.search(
        rf'^ray_orchestrator_boot_time_seconds_count\{{[^}}]*WorkerId="{run.scaler_worker_id}"[^}}]*\}} (\S+)',
        text,
        re.MULTILINE,
    )
    assert boot and float(boot.group(1)) == 1.0, "one boot observed, once (not again after the lifecycle restart)"
