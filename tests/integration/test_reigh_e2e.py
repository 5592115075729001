"""The reigh profile end to end: a Reigh-shaped app database, real actors on the session's Ray,
LocalProvider pods running the Headless-Wan2GP stand-in (which never cooperates with us).

5 users x 30 tasks with dependency chains complete; users without credits or opted out of cloud
runs never get a pod; a worker killed mid-task, or one whose guardian reports it crashed, loses
its pod and its task goes back with the app's semantics and is completed by another worker.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray

from actors import remote
from cloud.local import LocalProvider
from config.settings import OrchestratorSettings, QueueProfile
from fleet.models import WorkerState
from store.postgres import PostgresStore
from store.reigh import fixture
from tests.support.fleet_harness import explain_fleet, fast_settings, fleet_cleanup, unique_name
from tests.support.polling import wait_for

pytestmark = pytest.mark.ray


def reigh_settings(database_url: str, state_dir: Path, **scaling: Any) -> OrchestratorSettings:
    base = fast_settings(database_url, state_dir, **scaling)
    template = base.provider.template.model_copy(
        update={"extra_env": {"REIGH_HEARTBEAT_INTERVAL_S": "0.3", "REIGH_POLL_INTERVAL_S": "0.2"}}
    )
    return base.model_copy(
        update={
            "queue": base.queue.model_copy(update={"profile": QueueProfile.REIGH}),
            "provider": base.provider.model_copy(update={"template": template}),
        }
    )


@pytest.fixture
def app(reigh_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(reigh_database_url, autocommit=True) as conn:
        fixture.add_task_type(conn, "travel_segment", "gpu")
        yield conn


def _statuses(app: psycopg.Connection[Any], ids: list[uuid.UUID]) -> dict[str, int]:
    rows = app.execute(
        "SELECT status::text, count(*) FROM public.tasks WHERE id = ANY(%s) GROUP BY 1", (ids,)
    ).fetchall()
    return {status: n for status, n in rows}


def test_five_users_thirty_tasks_each_with_dependencies(
    ray_session: dict[str, Any], reigh_database_url: str, app: psycopg.Connection[Any], tmp_path: Path
) -> None:
    settings = reigh_settings(reigh_database_url, tmp_path, max_workers=4)
    eligible: list[uuid.UUID] = []
    for _ in range(5):
        project = fixture.add_project(app, fixture.add_user(app, credits=100, in_cloud=None))
        previous: uuid.UUID | None = None
        for i in range(30):
            parents = [previous] if previous is not None and i % 3 else []  # chains of three
            previous = fixture.add_task(
                app, project_id=project, task_type="travel_segment", params={"duration_s": 0.05}, dependant_on=parents
            )
            eligible.append(previous)
    excluded: list[uuid.UUID] = []
    for credits, in_cloud in ((0, None), (100, False)):
        project = fixture.add_project(app, fixture.add_user(app, credits=credits, in_cloud=in_cloud))
        excluded += [fixture.add_task(app, project_id=project, task_type="travel_segment", params={}) for _ in range(5)]
    store = PostgresStore(reigh_database_url, min_size=1, max_size=2)
    scaler_name = unique_name("scaler-reigh")
    with fleet_cleanup(settings, [scaler_name]):
        scaler = remote.get_or_create_scaler(settings, name=scaler_name, probe_log_shipper=False)

        def explain() -> str:
            return f"{explain_fleet(store)}\nscaler: {ray.get(scaler.status.remote(), timeout=10)}"

        wait_for(lambda: _statuses(app, eligible) == {"Complete": 150}, 240, "150 tasks complete", explain=explain)
        # Nothing left that the app would hand out: the fleet goes back to zero, although 10 tasks
        # of the user without credits and the user who opted out are still Queued.
        wait_for(lambda: store.list_workers() == [], 90, "fleet back to 0", explain=explain)
        assert _statuses(app, excluded) == {"Queued": 10}

        workers = store.list_workers(include_terminated=True)
        assert workers and all(w.status is WorkerState.TERMINATED for w in workers)
        app_rows = dict(app.execute("SELECT id, status FROM public.workers").fetchall())
        assert app_rows == {w.id: "terminated" for w in workers}
        completed_by = {
            r[0] for r in app.execute("SELECT DISTINCT worker_id FROM public.tasks WHERE status = 'Complete'")
        }
        assert completed_by <= {w.id for w in workers}

        decisions = store.list_decisions()
        assert any(d.spawn_count > 0 for d in decisions)
        for decision in decisions:  # the app's own counts, recorded with every decision
            assert {"blocked_by_capacity", "blocked_by_deps", "blocked_by_settings", "eligible_with_active"} <= set(
                decision.inputs
            ), decision.inputs
        last = decisions[-1].inputs
        assert last["blocked_by_settings"] == 10 and last["claimable"] == 0

        # status and explain read the same way in both profiles
        from typer.testing import CliRunner

        from orchestrator.cli import app as cli

        env = {
            "DATABASE_URL": reigh_database_url,
            "ORCHESTRATOR_DATABASE__BACKEND": "postgres",
            "ORCHESTRATOR_QUEUE__PROFILE": "reigh",
        }
        shown = CliRunner().invoke(cli, ["explain", "--worker", workers[0].id, "--json"], env=env)
        assert shown.exit_code == 0, shown.output
        assert workers[0].id in shown.output and '"terminated"' in shown.output
        at = decisions[-1].at
        assert at is not None
        around = CliRunner().invoke(cli, ["explain", "--at", f"{at:%H:%M:%S}", "--json"], env=env)
        assert around.exit_code == 0, around.output
        assert '"blocked_by_settings": 10' in around.output, around.output
    store.close()


def _pod_pid(provider: LocalProvider, worker_id: str) -> int:
    pods = [p for p in provider.list(worker_id) if p.name == worker_id]
    assert len(pods) == 1, pods
    return int(pods[0].raw["pid"])


@pytest.mark.parametrize("how", ["sigkill", "reported_crashed"])
def test_a_worker_lost_mid_task_gives_its_task_to_another(
    how: str, ray_session: dict[str, Any], reigh_database_url: str, app: psycopg.Connection[Any], tmp_path: Path
) -> None:
    # A heartbeat timeout well past the lifecycle's step, so that under load the crash report, not
    # the silence that follows it, is what the lifecycle sees first.
    settings = reigh_settings(reigh_database_url, tmp_path, max_workers=1, heartbeat_timeout_s=20.0)
    project = fixture.add_project(app, fixture.add_user(app, credits=100, in_cloud=True))
    task = fixture.add_task(app, project_id=project, task_type="travel_segment", params={"duration_s": 4})
    store = PostgresStore(reigh_database_url, min_size=1, max_size=2)
    provider = LocalProvider(tmp_path)
    scaler_name = unique_name("scaler-reigh-lost")
    with fleet_cleanup(settings, [scaler_name]):
        remote.get_or_create_scaler(settings, name=scaler_name, probe_log_shipper=False)

        def holder() -> str | None:
            row = app.execute(
                "SELECT worker_id FROM public.tasks WHERE id = %s AND status = 'In Progress'", (task,)
            ).fetchone()
            return row[0] if row else None

        first = wait_for(holder, 60, "the task claimed", explain=lambda: explain_fleet(store))
        # Freeze the worker at once so that its short task cannot finish under load before it is lost;
        # its first heartbeat came before its claim, so the orchestrator still promotes it.
        pid = _pod_pid(provider, first)
        os.kill(pid, signal.SIGSTOP)
        # The app's claim ignores worker status, so a task can be taken before promotion; lose the
        # worker once the orchestrator has promoted it, as in the field.
        wait_for(
            lambda: (w := store.get_worker(first)) is not None and w.status is WorkerState.ACTIVE,
            30,
            "the worker promoted",
            explain=lambda: explain_fleet(store),
        )
        if how == "sigkill":
            os.kill(pid, signal.SIGKILL)  # no goodbye: its heartbeat just stops
        else:
            # The worker hangs; its guardian reports the crash (and the app's function requeues).
            app.execute(
                "SELECT public.func_worker_heartbeat_with_logs(worker_id_param => %s, status_param => 'crashed')",
                (first,),
            )

        def done_by_another() -> bool:
            row = app.execute(
                "SELECT status::text, worker_id, attempts FROM public.tasks WHERE id = %s", (task,)
            ).fetchone()
            return row is not None and row[0] == "Complete" and row[1] != first

        wait_for(done_by_another, 120, "the task completed by another worker", explain=lambda: explain_fleet(store))
        row = app.execute("SELECT attempts FROM public.tasks WHERE id = %s", (task,)).fetchone()
        assert row == (1,)
        events = store.list_worker_events(worker_id=first)
        error = next(e for e in events if e.to_status == "error")
        # SIGKILL: the pod exits under the task it holds (lost_with_task, counted against the task).
        lost = ("pod_lost", "heartbeat_lost", "lost_with_task")
        expected = ("worker_crashed",) if how == "reported_crashed" else lost
        assert error.reason.split(":")[0] in expected, events
        wait_for(
            lambda: (w := store.get_worker(first)) is not None and w.status is WorkerState.TERMINATED,
            60,
            "the lost worker terminated",
            explain=lambda: explain_fleet(store),
        )
        assert app.execute("SELECT status FROM public.workers WHERE id = %s", (first,)).fetchone() == ("terminated",)
    store.close()
