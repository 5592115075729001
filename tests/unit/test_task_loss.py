"""A pod lost while its worker held a task counts against the task, not the fleet's breaker; the
worker runs as many tasks at once as the policy sizes the fleet by. Pure: no database, no Ray."""

from __future__ import annotations

import pytest

from cloud import spec
from config.settings import OrchestratorSettings, ScalingSettings
from fleet import policy
from fleet.lifecycle import LOST_WITH_TASK, Observation, PodPhase, Transition, next_transition
from fleet.models import BreakerStatus, DemandSnapshot, FleetHistory, SpawnOutcomeKind, WorkerState
from worker import __main__ as worker_main

S = WorkerState
CFG = ScalingSettings(heartbeat_timeout_s=90, min_attempts_for_breaker=2, failure_rate_threshold=0.1)


def _step(obs: Observation, now: float = 1_001.0) -> Transition | None:
    return next_transition(S.ACTIVE, obs, now=now, created_at=900.0, state_since=950.0, config=CFG)


@pytest.mark.parametrize("phase", [PodPhase.EXITED, PodPhase.GONE])
def test_a_pod_that_dies_under_a_task_is_lost_with_task_and_no_spawn_outcome(phase: PodPhase) -> None:
    tr = _step(Observation(phase, 1_000.0, tasks_in_progress=1))
    assert tr is not None and tr.to is S.ERROR and tr.code == LOST_WITH_TASK
    assert tr.outcome is None  # the spawn already counted as BOOTED; the loss is the task's
    assert "1 task(s)" in tr.reason and "not against the fleet's breaker" in tr.reason


def test_losses_the_fleet_answers_for_still_count() -> None:
    idle = _step(Observation(PodPhase.EXITED, 1_000.0, tasks_in_progress=0))
    assert idle is not None and idle.code == "pod_lost" and idle.outcome is SpawnOutcomeKind.HEARTBEAT_LOST
    # A silent heartbeat with the pod still running: the network or the host, not the task (the
    # worker beats from a thread of its own).
    silent = _step(Observation(PodPhase.RUNNING, 1_000.0, tasks_in_progress=1), now=1_000.0 + 91)
    assert silent is not None and silent.code == "heartbeat_lost"
    assert silent.outcome is SpawnOutcomeKind.HEARTBEAT_LOST


def test_three_lost_with_task_never_open_the_breaker() -> None:
    events: list[tuple[str, float, str | None, str, str]] = []
    for i, worker in enumerate(("p1", "p2", "p3")):
        t = 100.0 * i
        loss = _step(Observation(PodPhase.EXITED, t + 5, tasks_in_progress=1), now=t + 10)
        assert loss is not None
        events += [
            (worker, t, None, "spawning", "spawn: decision"),
            (worker, t + 5, "spawning", "active", "promoted: pod running and first heartbeat 5s after creation"),
            (worker, t + 10, "active", "error", loss.reason),
        ]
    outcomes = policy.outcomes_from_events(events)
    assert {o.kind for o in outcomes} == {SpawnOutcomeKind.BOOTED}
    now = 400.0
    history = policy.record_outcomes(FleetHistory(), outcomes, now, CFG)
    demand = DemandSnapshot(queued=1, claimable=1, in_progress=0)
    decision = policy.decide(policy.PolicyContext(demand, [], history, CFG, now))
    assert decision.breaker.status is BreakerStatus.CLOSED and decision.spawn == 1
    # The same three as pod_lost (an idle worker's pod dying) would open it.
    idle = [
        (w, at, f, to, "pod_lost: pod exited while active with 0 task(s) in progress" if to == "error" else r)
        for w, at, f, to, r in events
    ]
    history = policy.record_outcomes(FleetHistory(), policy.outcomes_from_events(idle), now, CFG)
    assert policy.decide(policy.PolicyContext(demand, [], history, CFG, now)).breaker.status is BreakerStatus.OPEN


def _settings(**scaling: object) -> OrchestratorSettings:
    return OrchestratorSettings(
        database={"backend": "postgres", "url": "postgresql://u@db.example:5432/app"}, scaling=scaling
    )


@pytest.mark.parametrize("tasks_per_worker", [1, 3])
def test_the_pod_runs_tasks_per_worker_tasks_at_once(tasks_per_worker: int) -> None:
    env = spec.pod_env(
        _settings(tasks_per_worker=tasks_per_worker), "gpu-20250101_000000-0000abcd", database_url="postgresql://x"
    )
    assert env["WORKER_CONCURRENCY"] == str(tasks_per_worker)


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_the_worker_refuses_a_concurrency_it_cannot_run(value: str) -> None:
    environ = {"WORKER_ID": "gpu-x", "WORKER_CONCURRENCY": value, "DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    assert worker_main.main([], environ) == 2
