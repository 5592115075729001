"""The pod lifecycle state machine: every rule of issue 3, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import ScalingSettings
from fleet.lifecycle import (
    PARK_REQUESTED,
    TRANSITIONS,
    IllegalTransition,
    Observation,
    PodPhase,
    check_transition,
    drain_parks,
    next_transition,
    reason_code,
)
from fleet.models import SpawnOutcomeKind, WorkerState

S = WorkerState
CFG = ScalingSettings(spawn_timeout_s=600, heartbeat_timeout_s=90, drain_timeout_s=900)


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def step(state: S, obs: Observation, now: float, created_at: float = 1_000.0, state_since: float = 1_000.0):
    return next_transition(state, obs, now=now, created_at=created_at, state_since=state_since, config=CFG)


def test_every_edge_has_a_comment_and_terminated_is_terminal() -> None:
    assert set(TRANSITIONS) == set(S)
    for edges in TRANSITIONS.values():
        for comment in edges.values():
            assert len(comment) > 10
    assert TRANSITIONS[S.TERMINATED] == {}


@pytest.mark.parametrize(
    ("current", "new"),
    [(S.TERMINATED, S.ACTIVE), (S.SPAWNING, S.DRAINING), (S.TERMINATING, S.ACTIVE), (S.ERROR, S.ACTIVE)],
)
def test_illegal_moves_are_refused_with_a_reason(current: S, new: S) -> None:
    with pytest.raises(IllegalTransition, match=f"{current.value} -> {new.value}"):
        check_transition(current, new)


def test_promotion_needs_running_pod_and_a_real_heartbeat() -> None:
    clock = FakeClock()
    created = clock.now
    now = clock.advance(56)
    assert step(S.SPAWNING, Observation(PodPhase.PENDING, now), now) is None  # heartbeat but pod not running
    assert step(S.SPAWNING, Observation(PodPhase.RUNNING, None), now) is None  # running, no heartbeat yet
    stale = Observation(PodPhase.RUNNING, created - 5)  # a heartbeat older than the worker is not real
    assert step(S.SPAWNING, stale, now) is None
    tr = step(S.SPAWNING, Observation(PodPhase.RUNNING, now), now)
    assert tr is not None and tr.to is S.ACTIVE and tr.outcome is SpawnOutcomeKind.BOOTED
    assert reason_code(tr.reason) == "promoted" and "56s" in tr.reason


def test_spawn_timeout_and_spawn_error() -> None:
    tr = step(S.SPAWNING, Observation(PodPhase.RUNNING, None), 1_000 + 612)
    assert tr is not None and tr.to is S.ERROR and tr.outcome is SpawnOutcomeKind.SPAWN_TIMEOUT
    assert tr.reason.startswith("spawn_timeout: no heartbeat 612s after creation (limit 600s)")
    tr = step(S.SPAWNING, Observation(PodPhase.NONE, None, provider_error="no GPU"), 1_010)
    assert tr is not None and tr.to is S.ERROR and tr.outcome is SpawnOutcomeKind.SPAWN_ERROR
    tr = step(S.SPAWNING, Observation(PodPhase.EXITED, None), 1_010)
    assert tr is not None and tr.to is S.ERROR and tr.code == "spawn_error"


def test_active_heartbeat_lost_and_pod_lost() -> None:
    assert step(S.ACTIVE, Observation(PodPhase.RUNNING, 1_000), 1_090) is None
    tr = step(S.ACTIVE, Observation(PodPhase.RUNNING, 1_000), 1_091)
    assert tr is not None and tr.to is S.ERROR and tr.outcome is SpawnOutcomeKind.HEARTBEAT_LOST
    tr = step(S.ACTIVE, Observation(PodPhase.GONE, 1_000), 1_001)
    assert tr is not None and tr.to is S.ERROR and tr.code == "pod_lost"


def test_a_worker_that_reports_its_own_crash_is_lost_at_once() -> None:
    crashed = Observation(PodPhase.RUNNING, 1_050, tasks_in_progress=1, worker_reported_crash=True)
    tr = step(S.ACTIVE, crashed, 1_051)  # its heartbeat is fresh: no waiting for the timeout
    assert tr is not None and tr.to is S.ERROR and tr.code == "worker_crashed"
    assert tr.outcome is SpawnOutcomeKind.HEARTBEAT_LOST
    tr = step(S.SPAWNING, Observation(PodPhase.RUNNING, None, worker_reported_crash=True), 1_010)
    assert tr is not None and tr.to is S.ERROR and tr.outcome is SpawnOutcomeKind.SPAWN_ERROR
    tr = step(S.DRAINING, crashed, 1_051)
    assert tr is not None and tr.to is S.ERROR and tr.code == "drain_lost"


def test_drain_waits_for_tasks_then_times_out() -> None:
    tr = step(S.ACTIVE, Observation(PodPhase.RUNNING, 1_000, tasks_in_progress=1, drain_requested=True), 1_001)
    assert tr is not None and tr.to is S.DRAINING and tr.outcome is None
    busy = Observation(PodPhase.RUNNING, 1_500, tasks_in_progress=1)
    assert step(S.DRAINING, busy, 1_500, state_since=1_001) is None
    tr = step(S.DRAINING, Observation(PodPhase.RUNNING, 1_500), 1_500, state_since=1_001)
    assert tr is not None and tr.to is S.TERMINATING and tr.code == "drained"
    late = Observation(PodPhase.RUNNING, 1_950, tasks_in_progress=1)
    tr = step(S.DRAINING, late, 1_950, state_since=1_001)
    assert tr is not None and tr.to is S.TERMINATING and tr.code == "drain_timeout"


def test_terminate_requested_drains_busy_and_stops_idle() -> None:
    busy = Observation(PodPhase.RUNNING, 1_000, tasks_in_progress=2, terminate_requested=True)
    tr = step(S.ACTIVE, busy, 1_001)
    assert tr is not None and tr.to is S.DRAINING
    idle = Observation(PodPhase.RUNNING, 1_000, terminate_requested=True)
    tr = step(S.ACTIVE, idle, 1_001)
    assert tr is not None and tr.to is S.TERMINATING
    tr = step(S.SPAWNING, Observation(PodPhase.PENDING, None, terminate_requested=True), 1_001)
    assert tr is not None and tr.to is S.TERMINATING


def test_error_terminates_at_once_and_terminated_needs_gone() -> None:
    tr = step(S.ERROR, Observation(PodPhase.RUNNING, None), 1_001)
    assert tr is not None and tr.to is S.TERMINATING
    for phase in (PodPhase.RUNNING, PodPhase.EXITED, PodPhase.UNKNOWN, PodPhase.NONE):
        assert step(S.TERMINATING, Observation(phase, None), 1_100) is None
    tr = step(S.TERMINATING, Observation(PodPhase.GONE, None), 1_100)
    assert tr is not None and tr.to is S.TERMINATED
    assert step(S.TERMINATED, Observation(PodPhase.GONE, None), 1_100) is None


def test_unknown_pod_phase_decides_nothing_before_the_timeout() -> None:
    assert step(S.SPAWNING, Observation(PodPhase.UNKNOWN, None), 1_100) is None
    assert step(S.ACTIVE, Observation(PodPhase.UNKNOWN, 1_090), 1_100) is None


observations = st.builds(
    Observation,
    pod_phase=st.sampled_from(list(PodPhase)),
    last_heartbeat_at=st.none() | st.floats(0, 3000),
    tasks_in_progress=st.integers(0, 3),
    drain_requested=st.booleans(),
    terminate_requested=st.booleans(),
    provider_error=st.none() | st.just("no capacity"),
    worker_reported_crash=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(S)), observations, st.floats(0, 3000), st.floats(0, 3000))
def test_every_returned_move_is_legal_and_coded(state: S, obs: Observation, created: float, dt: float) -> None:
    tr = step(state, obs, created + dt, created_at=created, state_since=created)
    if tr is None:
        return
    check_transition(state, tr.to)
    assert tr.code and tr.code == tr.code.lower() and " " not in tr.code
    # A breaker outcome only on promotion or on the way to error, never on a scale-down.
    if tr.outcome is not None:
        assert (state, tr.to) in {(S.SPAWNING, S.ACTIVE), (S.SPAWNING, S.ERROR), (S.ACTIVE, S.ERROR)}
    if tr.to is S.TERMINATED:
        assert obs.pod_phase is PodPhase.GONE
    if state is S.ACTIVE and tr.to is S.TERMINATING:
        assert obs.tasks_in_progress == 0  # a busy worker is drained, never cut off


def test_a_parked_drain_stops_the_pod_and_a_resume_needs_a_fresh_heartbeat() -> None:
    # drained into the warm pool: stopping, then stopped once the provider says so
    parked = step(S.DRAINING, Observation(PodPhase.RUNNING, 1_050.0, park_requested=True), 1_060.0)
    assert parked is not None and parked.to is S.STOPPING and parked.code == "parked" and parked.outcome is None
    # an operator's terminate wins over the park
    assert (
        step(
            S.DRAINING, Observation(PodPhase.RUNNING, 1_050.0, park_requested=True, terminate_requested=True), 1_060.0
        ).to
        is S.TERMINATING
    )
    assert step(S.STOPPING, Observation(PodPhase.RUNNING, 1_050.0), 1_070.0, state_since=1_060.0) is None
    stopped = step(S.STOPPING, Observation(PodPhase.EXITED, 1_050.0), 1_075.0, state_since=1_060.0)
    assert stopped is not None and stopped.to is S.STOPPED and stopped.code == "stopped"
    # kept until asked: not timed out by a heartbeat that stopped with the pod
    assert step(S.STOPPED, Observation(PodPhase.EXITED, 1_050.0), 9_000.0, state_since=1_075.0) is None
    resumed = step(
        S.STOPPED, Observation(PodPhase.EXITED, 1_050.0, resume_requested=True), 2_000.0, state_since=1_075.0
    )
    assert resumed is not None and resumed.to is S.RESUMING
    # the heartbeat from before the stop does not promote; one after the resume does, as no spawn outcome
    assert step(S.RESUMING, Observation(PodPhase.RUNNING, 1_050.0), 2_020.0, state_since=2_000.0) is None
    back = step(S.RESUMING, Observation(PodPhase.RUNNING, 2_025.0), 2_030.0, state_since=2_000.0)
    assert back is not None and back.to is S.ACTIVE and back.code == "resumed" and back.outcome is None


def test_a_refused_or_silent_resume_fails_without_a_spawn_outcome_and_a_stopped_pod_can_be_retired() -> None:
    refused = step(
        S.RESUMING, Observation(PodPhase.EXITED, None, provider_error="no free GPU"), 2_005.0, state_since=2_000.0
    )
    assert refused is not None and refused.to is S.ERROR and refused.code == "resume_failed" and refused.outcome is None
    late = step(
        S.RESUMING, Observation(PodPhase.RUNNING, 1_050.0), 2_000.0 + CFG.spawn_timeout_s + 1, state_since=2_000.0
    )
    assert late is not None and late.to is S.ERROR and late.outcome is None
    retired = step(S.STOPPED, Observation(PodPhase.EXITED, None, retire_requested=True), 3_000.0, state_since=1_075.0)
    assert retired is not None and retired.to is S.TERMINATING and retired.code == "retired"
    # an operator's `down --terminate-pods` says it was the operator, not the warm pool
    ended = step(S.STOPPED, Observation(PodPhase.EXITED, None, terminate_requested=True), 3_000.0, state_since=1_075.0)
    assert ended is not None and ended.to is S.TERMINATING and ended.code == "terminate_requested"
    lost = step(S.STOPPED, Observation(PodPhase.GONE, None), 3_000.0, state_since=1_075.0)
    assert lost is not None and lost.to is S.TERMINATING
    assert (
        S.RESUMING.counts_as_capacity() and not S.STOPPED.counts_as_capacity() and not S.STOPPING.counts_as_capacity()
    )


def test_a_parked_worker_that_exits_once_drained_is_stopped_and_a_stop_that_never_takes_is_terminated() -> None:
    exited = step(S.DRAINING, Observation(PodPhase.EXITED, 1_050.0, park_requested=True), 1_060.0)
    assert exited is not None and exited.to is S.STOPPING and exited.code == "parked"
    # without a park, an exited pod under a draining worker is still a loss
    assert step(S.DRAINING, Observation(PodPhase.EXITED, 1_050.0), 1_060.0).to is S.ERROR
    stuck = step(
        S.STOPPING, Observation(PodPhase.RUNNING, 1_050.0), 1_060.0 + CFG.drain_timeout_s + 1, state_since=1_060.0
    )
    assert stuck is not None and stuck.to is S.TERMINATING and stuck.code == "stop_timeout"


def test_an_exited_pod_whose_stop_the_provider_refused_is_not_recorded_stopped() -> None:
    refused = Observation(PodPhase.EXITED, 1_050.0, stop_accepted=False)
    assert step(S.STOPPING, refused, 1_070.0, state_since=1_060.0) is None
    accepted = step(S.STOPPING, Observation(PodPhase.EXITED, 1_050.0), 1_070.0, state_since=1_060.0)
    assert accepted is not None and accepted.to is S.STOPPED


def test_a_drain_that_parks_says_so_in_its_reason_so_a_restarted_lifecycle_can_read_it_back() -> None:
    parked = step(S.ACTIVE, Observation(PodPhase.RUNNING, 1_050.0, drain_requested=True, park_requested=True), 1_060.0)
    assert parked is not None and parked.to is S.DRAINING and parked.code == PARK_REQUESTED
    assert drain_parks(parked.reason)
    plain = step(S.ACTIVE, Observation(PodPhase.RUNNING, 1_050.0, drain_requested=True), 1_060.0)
    assert plain is not None and plain.to is S.DRAINING and not drain_parks(plain.reason)
    operator = step(S.ACTIVE, Observation(PodPhase.RUNNING, 1_050.0, 1, terminate_requested=True), 1_060.0)
    assert operator is not None and operator.to is S.DRAINING and not drain_parks(operator.reason)
