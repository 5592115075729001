"""The warm pool on real parts: worker rows in both profiles, the WorkerLifecycle stopping and
resuming a LocalProvider pod (a real process), and the Scaler carrying out the default policy's
park / resume on the session's Ray with a real Postgres.

- a row may be stopping / stopped / resuming, says since when (`status_since`, from its events),
  stays live (listed, its credential valid) until it is terminated; the Reigh app's row says
  `inactive` with the fine state in metadata, and a `crashed` from the stop is not held against
  the resumed worker;
- a parked pod is EXITED with no process left, and the SAME worker id resumes on the SAME pod;
- with warm_pool_size 1 the Scaler parks the idle worker and resumes it for the next task (no second
  pod); a resume the provider refuses ends that worker terminated and a new pod runs the task.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray

from actors import lifecycle as lifecycle_mod
from actors import remote
from actors import scaler as scaler_mod
from actors.store_gateway import GatewayProvider
from cloud.base import Pod, PodSpec, PodStatus, RateLimited
from cloud.local import LocalFaults, LocalProvider
from config.settings import OrchestratorSettings
from fleet import supervision
from fleet.lifecycle import TRANSITIONS, PodPhase
from fleet.models import BreakerState, Decision, DecisionKind, WorkerState
from orchestrator import explain_queries
from orchestrator.forensics import render_worker
from store import credentials
from store.base import NewTask, Store, TaskStatus, WorkerCredentialKind, WorkerRow
from store.postgres import PostgresStore
from store.reigh import fixture
from telemetry import tracing
from tests.integration.test_worker_credentials import _drop_roles_of
from tests.support.fleet_harness import actor_pid, explain_fleet, fast_settings, fleet_cleanup, sigkill, unique_name
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.polling import stays_true, wait_for

S = WorkerState
# The walk through the warm pool, each move legal in fleet.lifecycle.TRANSITIONS.
PARK_AND_RESUME = [
    (S.SPAWNING, S.ACTIVE, "promoted: test"),
    (S.ACTIVE, S.DRAINING, "drain_requested: test"),
    (S.DRAINING, S.STOPPING, "parked: test"),
    (S.STOPPING, S.STOPPED, "stopped: test"),
    (S.STOPPED, S.RESUMING, "resume_requested: test"),
    (S.RESUMING, S.ACTIVE, "resumed: test"),
]


@pytest.fixture
def pg(database_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(database_url, min_size=1, max_size=3)
    try:
        yield store
    finally:
        store.close()
        _drop_roles_of(database_url)


def _entered(store: Store, worker_id: str) -> float:
    """When the row entered its status, by its newest move in worker_events."""
    moves = [e for e in store.list_worker_events(worker_id=worker_id) if e.from_status != e.to_status]
    return moves[-1].at.timestamp()


# --- what a lifecycle does to the pod (pure) --------------------------------------------------------

_STOP, _RESUME, _OBSERVE = (
    supervision.LifecycleAction.STOP_POD,
    supervision.LifecycleAction.RESUME_POD,
    supervision.LifecycleAction.OBSERVE,
)


@pytest.mark.parametrize(
    ("state", "phase", "error", "due", "action"),
    [
        (S.STOPPING, PodPhase.RUNNING, None, True, _STOP),
        (S.STOPPING, PodPhase.EXITED, None, True, _STOP),  # exited is not necessarily stopped: ask anyway
        (S.STOPPING, PodPhase.RUNNING, None, False, _OBSERVE),  # accepted, or a refusal waiting out its backoff
        (S.STOPPING, PodPhase.GONE, None, True, _OBSERVE),
        (S.STOPPED, PodPhase.EXITED, None, True, _OBSERVE),
        (S.RESUMING, PodPhase.EXITED, None, True, _RESUME),
        (S.RESUMING, PodPhase.EXITED, None, False, _OBSERVE),  # asked once already
        (S.RESUMING, PodPhase.EXITED, "CapacityUnavailable: no free GPU", True, _OBSERVE),
        (S.RESUMING, PodPhase.RUNNING, None, True, _OBSERVE),
    ],
)
def test_what_a_lifecycle_does_to_a_parked_pod(
    state: WorkerState, phase: PodPhase, error: str | None, due: bool, action: supervision.LifecycleAction
) -> None:
    assert supervision.lifecycle_action(state, phase, error, stop_due=due, resume_due=due) is action


# --- the rows ---------------------------------------------------------------------------------------


def test_a_row_parks_and_resumes_and_says_since_when(store: Store) -> None:
    wid = "gpu-20261201_120000-0000aaaa"
    store.create_worker(wid, reason="scale_up: test")
    row = store.get_worker(wid)
    assert row is not None and row.status_since == row.created_at
    for before, after, reason in PARK_AND_RESUME:
        assert after in TRANSITIONS[before]
        assert store.transition_worker(wid, before, after, reason)
        listed = {w.id: w for w in store.list_workers()}
        assert listed[wid].status is after, "a parked worker is live: listed, never reaped as an orphan"
        assert listed[wid].status_since is not None
        assert listed[wid].status_since.timestamp() == pytest.approx(_entered(store, wid), abs=1e-3)
        if after is S.STOPPED:
            stopped_since = listed[wid].status_since
            store.note_worker(wid, "stop_failed: a note does not move the row")
            again = store.get_worker(wid)
            assert again is not None and again.status_since == stopped_since
    assert store.transition_worker(wid, S.ACTIVE, S.TERMINATING, "drained: test")
    assert store.transition_worker(wid, S.TERMINATING, S.TERMINATED, "terminated: test")
    assert store.list_workers() == []


def test_a_stopped_workers_own_credential_stays_valid_until_it_is_terminated(
    pg: PostgresStore, database_url: str
) -> None:
    wid = "gpu-20261201_120000-0000bbbb"
    pg.create_worker(wid, reason="scale_up: test")
    issued = pg.issue_worker_credential(wid, WorkerCredentialKind.LOGIN, 3600)
    conninfo = credentials.login_conninfo(database_url, issued)
    for before, after, reason in PARK_AND_RESUME[:4]:
        assert pg.transition_worker(wid, before, after, reason)
    assert wid not in pg.reap_worker_credentials().revoked
    # The pod, resumed later, heartbeats with the credential it was created with.
    with psycopg.connect(conninfo, autocommit=True) as pod:
        beat = pod.execute("SELECT orchestrator.worker_heartbeat(%s)", (wid,)).fetchone()
    assert beat == ("stopped",)
    assert pg.transition_worker(wid, S.STOPPED, S.TERMINATING, "retired: test")
    assert pg.transition_worker(wid, S.TERMINATING, S.TERMINATED, "terminated: test")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(conninfo, connect_timeout=5).close()


@pytest.fixture
def app(reigh_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(reigh_database_url, autocommit=True) as conn:
        yield conn


def _beat(app: psycopg.Connection[Any], worker_id: str, status: str = "active") -> None:
    app.execute(
        "SELECT public.func_worker_heartbeat_with_logs(worker_id_param => %s, status_param => %s)", (worker_id, status)
    )


def _app_status(app: psycopg.Connection[Any], worker_id: str) -> tuple[str, str]:
    found = app.execute("SELECT status, metadata FROM public.workers WHERE id = %s", (worker_id,)).fetchone()
    assert found is not None
    return found[0], found[1]["orchestrator_status"]


def test_the_reigh_apps_row_of_a_parked_worker(reigh_store: Store, app: psycopg.Connection[Any]) -> None:
    wid = "gpu-20261201_120000-0000cccc"
    reigh_store.create_worker(wid, reason="scale_up: test")
    _beat(app, wid)
    app_says = {}
    for before, after, reason in PARK_AND_RESUME:
        assert reigh_store.transition_worker(wid, before, after, reason)
        app_says[after] = _app_status(app, wid)
        if after is S.STOPPING:
            _beat(app, wid, "crashed")  # the guardian, as the stop kills the worker
        row = reigh_store.get_worker(wid)
        assert row is not None and row.status_since is not None
        if after is S.RESUMING:
            # The crash the stop caused is not held against the resumed worker; its own beat says active.
            assert row.reported_status == "inactive"
            _beat(app, wid)
            resumed = reigh_store.get_worker(wid)
            assert resumed is not None and resumed.reported_status == "active"
            assert resumed.last_heartbeat_at is not None and resumed.last_heartbeat_at >= row.status_since
    # Only the strict check's values, the fine state in metadata.
    assert app_says[S.STOPPING] == ("inactive", "stopping")
    assert app_says[S.STOPPED] == ("inactive", "stopped")
    assert app_says[S.RESUMING] == ("inactive", "resuming")
    assert _app_status(app, wid) == ("active", "active")


# --- the lifecycle: a real pod stopped and resumed ----------------------------------------------------


def _group_gone(pod_raw: dict[str, Any]) -> bool:
    try:
        os.killpg(int(pod_raw["pgid"]), 0)
    except ProcessLookupError:
        return True
    return False


def _lifecycle(settings: OrchestratorSettings, worker_id: str) -> lifecycle_mod.WorkerLifecycle:
    return lifecycle_mod.WorkerLifecycle(worker_id, settings, exit_hook=lambda: None)


def _wait_state(store: Store, worker_id: str, state: WorkerState, timeout_s: float = 30) -> WorkerRow:
    row: WorkerRow = wait_for(
        lambda: next((r for r in [store.get_worker(worker_id)] if r is not None and r.status is state), None),
        timeout_s,
        f"{worker_id} {state.value}",
        interval_s=0.1,
        explain=lambda: explain_fleet(store),
    )
    return row


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rcv:
        yield rcv
    tracing.reset_tracing()


class _RateLimitedOnce(LocalProvider):
    """A LocalProvider whose first resume answers like a RunPod 429."""

    resumes = 0

    def resume(self, pod_id: str) -> Pod:
        type(self).resumes += 1
        if type(self).resumes == 1:
            raise RateLimited("429 Too Many Requests")
        return super().resume(pod_id)


def test_the_lifecycle_stops_a_drained_pod_and_resumes_the_same_worker(
    pg: PostgresStore, database_url: str, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    base = fast_settings(database_url, tmp_path)
    settings = base.model_copy(
        update={"telemetry": base.telemetry.model_copy(update={"otlp_endpoint": receiver.endpoint})}
    )
    provider = LocalProvider(tmp_path)
    wid = "gpu-20261201_120000-0000dddd"
    tracing.setup_tracing(settings.telemetry, component="scaler", identity="test")
    traceparent = tracing.start_lifecycle_trace(wid)
    pg.create_worker(wid, reason="scale_up: test", trace_context=traceparent)
    # The first resume answers like a RunPod 429: a passing fault is asked again, not the end of the
    # parked pod.
    _RateLimitedOnce.resumes = 0
    lifecycle = lifecycle_mod.WorkerLifecycle(
        wid, settings, exit_hook=lambda: None, provider_factory=lambda s: _RateLimitedOnce(tmp_path)
    )
    try:
        active = _wait_state(pg, wid, S.ACTIVE)
        assert active.pod_id is not None
        first = provider.get(active.pod_id)

        lifecycle.drain("scale_down: test", park=True)
        stopped = _wait_state(pg, wid, S.STOPPED)
        pod = provider.get(active.pod_id)
        assert pod.status is PodStatus.EXITED and _group_gone(pod.raw), pod.raw
        assert stopped.pod_id == active.pod_id and stopped.status_since is not None
        # A stopped pod is polled every 30 s: 45 s after its last step the lifecycle is slow, not stuck.
        wait_for(lambda: lifecycle.status()["state"] == "stopped", 10, "the lifecycle follows the row")
        lifecycle._last_completed_at = time.time() - 45
        assert lifecycle.health()["verdict"] == "ok", lifecycle.health()

        lifecycle.request_resume("scale_up: test")
        resumed = _wait_state(pg, wid, S.ACTIVE)
        assert resumed.pod_id == active.pod_id, "the same pod runs again"
        assert _RateLimitedOnce.resumes == 2, "the rate-limited resume was asked again"
        assert resumed.last_heartbeat_at is not None and resumed.status_since is not None
        pod = provider.get(active.pod_id)
        assert pod.status is PodStatus.RUNNING and pod.raw["pid"] != first.raw["pid"]
        assert [p.id for p in provider.list("gpu-")] == [active.pod_id], "no second pod"

        lifecycle.request_terminate("test over")
        _wait_state(pg, wid, S.TERMINATED)
    finally:
        lifecycle.stop()
    moves = [(e.from_status, e.to_status) for e in pg.list_worker_events(worker_id=wid) if e.from_status != e.to_status]
    assert moves[:-2] == [(None, "spawning")] + [(a.value, b.value) for a, b, _ in PARK_AND_RESUME]

    # One trace from the decision's anchor to the end, across the stop and the resume.
    trace_id = traceparent.split("-")[1] if traceparent else None
    spans = [s for s in receiver.wait_for(lambda got: any(s.name == tracing.END_SPAN for s in got), timeout=20)]
    ours = [s for s in spans if s.trace_id == trace_id]
    phases = [s.name for s in sorted(ours, key=lambda s: s.start_ns) if s.attributes.get("lifecycle.phase")]
    assert phases == ["provision", "boot", "active", "drain", "stop", "stopped", "resume", "active", "terminate"], (
        phases
    )
    resume = next(s for s in ours if s.name == "resume")
    assert resume.attributes.get("pod.resumed") is True
    moved_to = [s.attributes["to"] for s in sorted(ours, key=lambda s: s.start_ns) if s.name == tracing.TRANSITION_SPAN]
    assert moved_to[:7] == ["active", "draining", "stopping", "stopped", "resuming", "active", "terminating"], moved_to


def test_a_parked_drain_outlives_its_lifecycles_restart_and_its_timeout_requeues_what_the_stopped_pod_held(
    pg: PostgresStore, database_url: str, tmp_path: Path
) -> None:
    base = fast_settings(database_url, tmp_path, drain_timeout_s=3.0)
    # The worker would keep its task for a minute after SIGTERM; the stop kills it after 0.5 s, so
    # nothing but the lifecycle gives the task back.
    settings = base.model_copy(update={"worker": base.worker.model_copy(update={"shutdown_grace_s": 60.0})})
    wid = "gpu-20261201_120000-0000ffff"
    task_id = pg.insert_tasks([NewTask(task_type="travel_segment", user_id="u1", params={"duration_s": 120})])[0]
    pg.create_worker(wid, reason="scale_up: test")

    def lifecycle_of_the_worker() -> lifecycle_mod.WorkerLifecycle:
        return lifecycle_mod.WorkerLifecycle(
            wid,
            settings,
            provider_factory=lambda s: LocalProvider(s.state_dir, boot_delay_s=0.3, terminate_grace_s=0.5),
            exit_hook=lambda: None,
        )

    lifecycle = lifecycle_of_the_worker()
    try:
        wait_for(
            lambda: (w := pg.get_worker(wid)) is not None and w.tasks_in_progress == 1,
            30,
            "the worker holding the long task",
            interval_s=0.1,
        )
        lifecycle.drain("scale_down: test", park=True)
        _wait_state(pg, wid, S.DRAINING)
        # The process dies mid-drain (the park was asked of it alone): the next one parks the pod all the same.
        lifecycle.stop()
        lifecycle = lifecycle_of_the_worker()
        _wait_state(pg, wid, S.STOPPED)
        task = pg.get_task(task_id)
        assert task is not None and task.status == TaskStatus.QUEUED and task.worker_id is None, task
        assert task.error is not None and "was lost while running it" in task.error, task.error
        reasons = [e.reason for e in pg.list_worker_events(worker_id=wid) if e.to_status == "stopping"]
        assert reasons and reasons[0].startswith("drain_timeout:"), reasons
        # A retire is the Scaler's write like a resume: one from a Scaler no longer leading is refused.
        old = pg.acquire_leader_lease("scaler", "scaler-old", 30)
        pg.release_leader_lease("scaler", "scaler-old", old.epoch)
        new = pg.acquire_leader_lease("scaler", "scaler-new", 30)
        assert new.acquired and new.epoch > old.epoch
        lifecycle.request_retire("retired: the old leader's decision", epoch=old.epoch)
        stays_true(lambda: (w := pg.get_worker(wid)) is not None and w.status is S.STOPPED, 2.0, "stale retire refused")
        lifecycle.request_retire("retired: the leader's decision", epoch=new.epoch)
        _wait_state(pg, wid, S.TERMINATED)
        ended = [e.reason for e in pg.list_worker_events(worker_id=wid) if e.to_status == "terminating"]
        assert len(ended) == 1 and ended[0].startswith("retired:"), ended
    finally:
        lifecycle.stop()


def test_a_lifecycle_reads_its_own_pod_after_an_act_then_the_shared_list_again(
    database_url: str, tmp_path: Path
) -> None:
    """A stopped or resumed pod lives on for hours: its lifecycle reads the provider itself only right
    after its own stop or resume (so it never sees an older list), then the gateway's shared list."""
    settings = fast_settings(database_url, tmp_path)  # shared list at most 0.25 s old: own reads for 0.5 s
    own = LocalProvider(tmp_path)
    spec = PodSpec(image="local", gpu_types=["local"], start_command="sleep 60")
    pod = own.create("gpu-20261201_120000-0000eeee", spec)
    gateway_reads: list[str] = []

    def gateway(method: str, args: tuple[Any, ...]) -> Any:
        gateway_reads.append(method)
        return own.get(args[1]) if method == "pod" else None

    provider = GatewayProvider(settings, gateway, provider_factory=lambda _settings: own)
    try:
        assert provider.get(pod.id).status is PodStatus.RUNNING and gateway_reads == ["open", "pod"]
        provider.stop(pod.id)
        assert provider.get(pod.id).status is PodStatus.EXITED, "its own act seen at once"
        assert gateway_reads == ["open", "pod"]
        time.sleep(0.6)
        assert provider.get(pod.id).status is PodStatus.EXITED and gateway_reads == ["open", "pod", "pod"]
        provider.resume(pod.id)
        assert provider.get(pod.id).status is PodStatus.RUNNING and gateway_reads.count("pod") == 2
    finally:
        own.terminate(pod.id)


# --- the Scaler carries out the default policy's warm pool ---------------------------------------------


class _Requests:
    """A LifecycleDirectory that records what the Scaler asks; some workers' lifecycles are unreachable."""

    def __init__(self, unreachable: set[str]) -> None:
        self.unreachable = unreachable
        self.calls: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return 0

    def ensure(self, worker_id: str) -> None:
        pass

    def keep_only(self, worker_ids: set[str]) -> None:
        pass

    def _ask(self, what: str, worker_id: str) -> None:
        self.calls.append((what, worker_id))
        if worker_id in self.unreachable:
            raise RuntimeError(f"the lifecycle of {worker_id} is unreachable")

    def drain(self, worker_id: str, reason: str, epoch: int | None) -> None:
        self._ask("drain", worker_id)

    def park(self, worker_id: str, reason: str, epoch: int | None) -> None:
        self._ask("park", worker_id)

    def resume(self, worker_id: str, reason: str, epoch: int | None) -> None:
        assert epoch is not None, "a resume carries the Scaler's lease epoch"
        self._ask("resume", worker_id)

    def retire(self, worker_id: str, reason: str, epoch: int | None) -> None:
        assert epoch is not None, "a retire carries the Scaler's lease epoch"
        self._ask("retire", worker_id)


def test_the_scaler_asks_each_lifecycle_on_its_own(
    pg: PostgresStore, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """What to do comes from the decision (the policy is replaced here: the carrying-out is checked);
    one lifecycle that cannot be reached stalls none of the others, and is counted and logged."""
    decision = Decision(
        spawn=0,
        drain=("gpu-d1", "gpu-d2"),
        park=("gpu-d2",),
        resume=("gpu-r1", "gpu-r2"),
        retire=("gpu-x1", "gpu-x2"),
        reasons=("test: a warm pool decision",),
        breaker=BreakerState(),
        desired=2,
        capacity=0,
    )
    monkeypatch.setattr(scaler_mod.policy, "decide", lambda context: decision)
    requests = _Requests(unreachable={"gpu-r1", "gpu-d1", "gpu-x1"})
    scaler = scaler_mod.Scaler(
        fast_settings(database_url, tmp_path), name=unique_name("scaler-items"), lifecycles=requests, start=False
    )
    try:
        with caplog.at_level(logging.WARNING, logger="actors.scaler"):
            report = scaler.step()
    finally:
        scaler.stop()
    assert requests.calls == [
        ("resume", "gpu-r1"),
        ("resume", "gpu-r2"),
        ("drain", "gpu-d1"),
        ("park", "gpu-d2"),
        ("retire", "gpu-x1"),
        ("retire", "gpu-x2"),
    ]
    assert (report["resumed"], report["drained"], report["retired"]) == (["gpu-r2"], ["gpu-d2"], ["gpu-x2"])
    for failed in ("resume of gpu-r1", "drain of gpu-d1", "retire of gpu-x1"):
        assert failed in report["phase_errors"]["act"]
        assert any(r.levelno == logging.WARNING and failed in r.getMessage() for r in caplog.records), failed
    recorded = pg.list_decisions()[-1]
    assert recorded.inputs["warm_pool_resume"] == "gpu-r1,gpu-r2" and recorded.inputs["warm_pool_park"] == "gpu-d2"
    assert recorded.kind is DecisionKind.SCALE_UP


def _warm_settings(database_url: str, tmp_path: Path) -> OrchestratorSettings:
    return fast_settings(database_url, tmp_path, max_workers=2, warm_pool_size=1, default_resume_time_s=1.0)


def _task(store: PostgresStore, user: str) -> str:
    return store.insert_tasks([NewTask(task_type="travel_segment", user_id=user, params={"duration_s": 0.3})])[0]


def _parked(store: PostgresStore, provider: LocalProvider) -> WorkerRow:
    """The one worker of the fleet, parked: its row stopped, its pod EXITED with no process left."""
    row: WorkerRow = wait_for(
        lambda: next(iter(w for w in store.list_workers() if w.status is S.STOPPED), None),
        60,
        "the idle worker parked in the warm pool",
        interval_s=0.2,
        explain=lambda: explain_fleet(store),
    )
    assert row.pod_id is not None
    pod = provider.get(row.pod_id)
    assert pod.status is PodStatus.EXITED and _group_gone(pod.raw), pod.raw
    return row


def _done(store: PostgresStore, task_id: str, explain: Any) -> None:
    wait_for(
        lambda: (t := store.get_task(task_id)) is not None and t.status == TaskStatus.COMPLETE,
        60,
        f"task {task_id} complete",
        interval_s=0.2,
        explain=explain,
    )


@dataclasses.dataclass(frozen=True)
class _WarmFleet:
    scaler_name: str
    provider: LocalProvider
    parked: WorkerRow  # the worker that ran the first task, parked in the warm pool
    explain: Callable[[], str]


@contextlib.contextmanager
def _warm_fleet(pg: PostgresStore, database_url: str, tmp_path: Path) -> Iterator[_WarmFleet]:
    """A Scaler with warm_pool_size 1 that ran one task on a new pod and parked its idle worker."""
    settings = _warm_settings(database_url, tmp_path)
    provider = LocalProvider(tmp_path)
    name = unique_name("scaler-warm")
    with fleet_cleanup(settings, [name]):
        first_task = _task(pg, "u1")
        scaler = remote.get_or_create_scaler(settings, name=name, probe_log_shipper=False)

        def explain() -> str:
            return f"{explain_fleet(pg)}\nscaler: {ray.get(scaler.status.remote(), timeout=10)}"

        _done(pg, first_task, explain)
        yield _WarmFleet(name, provider, _parked(pg, provider), explain)


@pytest.mark.ray
def test_the_scaler_parks_the_idle_worker_and_resumes_it_for_the_next_task(
    ray_session: dict[str, Any], pg: PostgresStore, database_url: str, tmp_path: Path
) -> None:
    with _warm_fleet(pg, database_url, tmp_path) as fleet:
        provider, parked, explain = fleet.provider, fleet.parked, fleet.explain
        # Both restarted (SIGKILL, Ray brings them back): the stopped worker's lifecycle is re-attached
        # from its row and its EXITED pod is neither an orphan nor lost.
        for actor in (fleet.scaler_name, f"worker:{parked.id}"):
            pid = actor_pid(actor)
            assert pid is not None, actor
            sigkill(pid)
            wait_for(lambda a=actor, p=pid: actor_pid(a) not in (None, p), 30, f"{actor} restarted", interval_s=0.2)
        second_task = _task(pg, "u2")
        _done(pg, second_task, explain)
        workers = pg.list_workers(include_terminated=True)
        assert [w.id for w in workers] == [parked.id], f"the same worker ran both tasks\n{explain()}"
        assert {t.worker_id for t in pg.list_tasks()} == {parked.id}
        assert [p.id for p in provider.list("gpu-")] == [parked.pod_id], "no second pod"
        moves = [e.to_status for e in pg.list_worker_events(worker_id=parked.id) if e.from_status != e.to_status]
        parked_and_resumed = (S.SPAWNING, S.ACTIVE, S.DRAINING, S.STOPPING, S.STOPPED, S.RESUMING, S.ACTIVE)
        assert moves[:7] == [s.value for s in parked_and_resumed], explain()
        decisions = pg.list_decisions()
        assert any(d.inputs.get("warm_pool_park") == parked.id for d in decisions), explain()
        assert any(d.inputs.get("warm_pool_resume") == parked.id for d in decisions), explain()
        report = render_worker(explain_queries.explain_worker(pg, parked.id, cycle_interval_s=0.5, now=pg.now()))
        assert "stopped, kept in the warm pool" in report and "Resumed from the warm pool by:" in report, report


@pytest.mark.ray
def test_a_refused_resume_terminates_the_worker_and_a_new_pod_runs_the_task(
    ray_session: dict[str, Any], pg: PostgresStore, database_url: str, tmp_path: Path
) -> None:
    with _warm_fleet(pg, database_url, tmp_path) as fleet:
        provider, parked, explain = fleet.provider, fleet.parked, fleet.explain
        provider.set_fault(parked.id, LocalFaults(resume_refused=True))  # its host's GPUs were taken meanwhile
        second_task = _task(pg, "u2")
        _done(pg, second_task, explain)
        refused = _wait_state(pg, parked.id, S.TERMINATED)
        reasons = [e.reason for e in pg.list_worker_events(worker_id=parked.id)]
        assert any(r.startswith("resume_failed: the provider refused") for r in reasons), reasons
        assert refused.pod_id is not None
        assert refused.pod_id not in {p.id for p in provider.list("gpu-")}, "the refused pod is terminated"
        ran = pg.get_task(second_task)
        assert ran is not None and ran.worker_id not in (None, parked.id), explain()
        assert len(pg.list_workers(include_terminated=True)) == 2, explain()


@pytest.mark.ray
def test_the_reigh_worker_is_parked_and_resumed_under_the_same_id(
    ray_session: dict[str, Any], reigh_database_url: str, app: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The Headless-Wan2GP stand-in never cooperates: it is stopped with its pod, and its own first
    heartbeat after the resume (status 'active') is what makes it active again."""
    from tests.integration.test_reigh_e2e import reigh_settings

    settings = reigh_settings(reigh_database_url, tmp_path, max_workers=2, warm_pool_size=1, default_resume_time_s=1.0)
    fixture.add_task_type(app, "travel_segment", "gpu")
    project = fixture.add_project(app, fixture.add_user(app, credits=100, in_cloud=None))
    store = PostgresStore(reigh_database_url, min_size=1, max_size=2)
    provider = LocalProvider(tmp_path)
    name = unique_name("scaler-warm-reigh")

    def app_task(task_id: Any) -> tuple[str, str | None]:
        found = app.execute("SELECT status::text, worker_id FROM public.tasks WHERE id = %s", (task_id,)).fetchone()
        assert found is not None
        return found[0], found[1]

    try:
        with fleet_cleanup(settings, [name]):
            first = fixture.add_task(app, project_id=project, task_type="travel_segment", params={"duration_s": 0.1})
            remote.get_or_create_scaler(settings, name=name, probe_log_shipper=False)
            wait_for(lambda: app_task(first)[0] == "Complete", 60, "the first task complete", interval_s=0.2)
            parked = _parked(store, provider)
            assert _app_status(app, parked.id) == ("inactive", "stopped")
            second = fixture.add_task(app, project_id=project, task_type="travel_segment", params={"duration_s": 0.1})
            wait_for(
                lambda: app_task(second)[0] == "Complete",
                60,
                "the second task complete",
                interval_s=0.2,
                explain=lambda: explain_fleet(store),
            )
            assert app_task(second)[1] == parked.id, explain_fleet(store)
            _wait_state(store, parked.id, S.ACTIVE)
            assert _app_status(app, parked.id) == ("active", "active")
            assert [w.id for w in store.list_workers(include_terminated=True)] == [parked.id]
            assert [p.id for p in provider.list("gpu-")] == [parked.pod_id]
    finally:
        store.close()
