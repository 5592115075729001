"""fleet.supervision.lifecycles_to_ensure: which live workers get their WorkerLifecycle this cycle."""

from __future__ import annotations

from config.settings import OrphanPodPolicy
from fleet import supervision
from fleet.lifecycle import PodPhase
from fleet.models import WorkerState


def test_every_live_worker_gets_its_lifecycle_in_a_stable_order() -> None:
    assert supervision.lifecycles_to_ensure({"gpu-b", "gpu-a"}, set()) == ["gpu-a", "gpu-b"]


def test_not_while_the_scaler_is_still_creating_its_pod() -> None:
    # The Scaler starts that lifecycle itself once its create call returned: never two creates at once.
    assert supervision.lifecycles_to_ensure(["gpu-a", "gpu-b"], ["gpu-b"]) == ["gpu-a"]


def test_a_create_in_flight_for_a_row_no_longer_live_changes_nothing() -> None:
    assert supervision.lifecycles_to_ensure(["gpu-a"], ["gpu-z"]) == ["gpu-a"]


# --- reconcile: orphans and duplicates ---------------------------------------------------------------


def test_a_pod_without_a_row_is_recorded_for_termination_and_an_ended_workers_pod_terminated_directly() -> None:
    plan = supervision.reconcile([("p1", "gpu-new"), ("p2", "gpu-old")], [], ["gpu-old"], OrphanPodPolicy.TERMINATE)
    by_name = {o.pod_name: o for o in plan.orphans}
    assert not by_name["gpu-new"].adopt and not by_name["gpu-new"].ended
    assert by_name["gpu-old"].ended and not by_name["gpu-old"].adopt
    assert by_name["gpu-new"].reason.startswith("orphan_pod:")


def test_adopt_policy_never_adopts_an_ended_worker() -> None:
    plan = supervision.reconcile([("p1", "gpu-a"), ("p2", "gpu-b")], [], ["gpu-b"], OrphanPodPolicy.ADOPT)
    assert [(o.pod_name, o.adopt, o.ended) for o in plan.orphans] == [("gpu-a", True, False), ("gpu-b", False, True)]


def test_two_pods_with_one_workers_name_the_unrecorded_one_is_a_duplicate() -> None:
    plan = supervision.reconcile([("p1", "gpu-a"), ("p9", "gpu-a")], [("gpu-a", "p1")], [], OrphanPodPolicy.TERMINATE)
    assert plan.orphans == ()
    (dup,) = plan.duplicates
    assert (dup.pod_id, dup.worker_id, dup.recorded_pod_id) == ("p9", "gpu-a", "p1")
    assert dup.reason.startswith("duplicate_pod:")


def test_a_pod_whose_id_is_not_the_recorded_one_is_a_duplicate_and_the_recorded_one_missing() -> None:
    plan = supervision.reconcile([("p9", "gpu-a")], [("gpu-a", "p1")], [], OrphanPodPolicy.TERMINATE)
    assert [d.pod_id for d in plan.duplicates] == ["p9"]
    assert plan.pods_missing == ("gpu-a",)


def test_no_duplicate_while_the_row_has_no_pod_id_yet() -> None:
    # The create is in flight: the pod listed may be the one about to be recorded.
    plan = supervision.reconcile([("p1", "gpu-a"), ("p2", "gpu-a")], [("gpu-a", None)], [], OrphanPodPolicy.TERMINATE)
    assert plan == supervision.ReconcilePlan()


# --- lifecycle actions and terminate retries -----------------------------------------------------------


def test_a_failed_terminate_waits_out_its_backoff_observing_only() -> None:
    assert (
        supervision.lifecycle_action(WorkerState.TERMINATING, PodPhase.RUNNING, None, terminate_due=False)
        is supervision.LifecycleAction.OBSERVE
    )
    assert (
        supervision.lifecycle_action(WorkerState.TERMINATING, PodPhase.RUNNING, None)
        is supervision.LifecycleAction.TERMINATE_POD
    )


def test_backoff_doubles_per_failure_up_to_the_cap_and_is_due_after_it() -> None:
    r1 = supervision.after_failure(None, 100.0, "Transient: 500", base_s=2.0, cap_s=10.0)
    assert (r1.attempts, r1.next_at) == (1, 102.0)
    assert not supervision.retry_due(r1, 101.9) and supervision.retry_due(r1, 102.0)
    r2 = supervision.after_failure(r1, 102.0, "Transient: 500", base_s=2.0, cap_s=10.0)
    r3 = supervision.after_failure(r2, 106.0, "Transient: 500", base_s=2.0, cap_s=10.0)
    r4 = supervision.after_failure(r3, 114.0, "Transient: 500", base_s=2.0, cap_s=10.0)
    assert [r.next_at - r.failed_at for r in (r2, r3, r4)] == [4.0, 8.0, 10.0]
    assert supervision.retry_due(None, 0.0)
    reason = supervision.terminate_failed_reason("p1", r2, 102.0)
    assert reason.startswith("terminate_failed:") and "attempt 2" in reason and "Transient: 500" in reason


# --- health ----------------------------------------------------------------------------------------------


def _facts(**kw: object) -> supervision.LoopFacts:
    values: dict[str, object] = {
        "unit": "cycle",
        "started_at": 0.0,
        "completed": 10,
        "last_completed_at": 100.0,
        "loop_alive": True,
    }
    values.update(kw)
    return supervision.LoopFacts(**values)  # type: ignore[arg-type]


def test_health_ok_reports_the_last_cycle_and_its_age() -> None:
    h = supervision.loop_health(_facts(), 101.5, interval_s=1.0)
    assert h["ok"] and h["verdict"] == "ok" and h["last_cycle"] == 10 and h["seconds_since_cycle"] == 1.5


def test_health_names_the_failing_phase_and_its_error() -> None:
    h = supervision.loop_health(
        _facts(consecutive_failures={"pods": 4, "act": 0}, last_error="pods: Transient: list pods: 500"),
        100.5,
        interval_s=1.0,
    )
    assert not h["ok"] and h["verdict"] == "failing"
    assert h["consecutive_failures"] == {"pods": 4}
    assert "pods failed 4 cycle(s) in a row" in h["summary"] and "Transient" in h["summary"]


def test_health_says_stuck_and_in_which_phase() -> None:
    h = supervision.loop_health(_facts(current_phase="act", current_phase_since=105.0), 100.0 + 60.0, interval_s=1.0)
    assert h["verdict"] == "stuck" and not h["ok"]
    assert "no cycle completed for 60s" in h["summary"] and "in phase act for 55s" in h["summary"]


def test_health_of_a_dead_loop_is_stopped() -> None:
    h = supervision.loop_health(_facts(loop_alive=False), 100.0, interval_s=1.0)
    assert h["verdict"] == "stopped" and not h["ok"]


def test_stuck_needs_longer_than_a_slow_provider_call() -> None:
    assert supervision.stuck_after_s(0.5) == 30.0 and supervision.stuck_after_s(20.0) == 60.0


def test_a_worker_that_ended_after_the_pods_were_listed_is_no_orphan() -> None:
    # Pods are listed before the rows are read: a lifecycle may confirm its pod gone in between.
    pods = [("p1", "gpu-late"), ("p2", "gpu-early")]
    plan = supervision.reconcile(
        pods,
        [],
        ["gpu-late", "gpu-early"],
        OrphanPodPolicy.TERMINATE,
        ended_at={"gpu-late": 100.0, "gpu-early": 90.0},
        listed_at=95.0,
    )
    assert [(o.pod_name, o.ended) for o in plan.orphans] == [("gpu-early", True)]


def test_a_stopped_pod_is_stepped_slowly_and_every_other_state_at_the_poll() -> None:
    assert supervision.step_pause_s(WorkerState.STOPPED, 1.0) == supervision.STOPPED_POLL_S
    assert supervision.step_pause_s(WorkerState.STOPPED, 60.0) == 60.0
    for state in (None, *(s for s in WorkerState if s is not WorkerState.STOPPED)):
        assert supervision.step_pause_s(state, 1.0) == 1.0
