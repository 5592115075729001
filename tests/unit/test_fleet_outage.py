"""A database outage is an incident to ride out: the pure rules (fleet.supervision, fleet.lifecycle),
the forensics' wording, and the demo's view of it. No database, no Ray: times are passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import ScalingSettings
from fleet import supervision
from fleet.lifecycle import Observation, PodPhase, next_transition
from fleet.models import WorkerState, WorkerView

S = WorkerState
CFG = ScalingSettings(spawn_timeout_s=60, heartbeat_interval_s=1, heartbeat_timeout_s=15, drain_timeout_s=900)
T0 = datetime(2025, 10, 16, 17, 35, 31, tzinfo=UTC).timestamp()


# --- backoff while the database is away -----------------------------------------------------------


@given(
    attempts=st.integers(min_value=1, max_value=200),
    jitter=st.floats(min_value=0, max_value=1),
    base=st.floats(min_value=0.01, max_value=5),
    cap=st.floats(min_value=0.1, max_value=60),
)
def test_backoff_is_capped_spread_by_jitter_and_never_zero(
    attempts: int, jitter: float, base: float, cap: float
) -> None:
    wait = supervision.outage_backoff_s(attempts, base_s=base, cap_s=cap, jitter=jitter)
    ceiling = min(cap, base * 2 ** (attempts - 1))
    assert ceiling / 2 - 1e-9 <= wait <= ceiling + 1e-9
    assert wait <= cap + 1e-9 and wait > 0


def test_backoff_grows_to_its_cap() -> None:
    waits = [supervision.outage_backoff_s(n, base_s=0.5, cap_s=5, jitter=1.0) for n in range(1, 8)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="jitter"):
        supervision.outage_backoff_s(1, base_s=1, cap_s=1, jitter=1.5)


def test_an_outage_keeps_its_start_counts_attempts_and_says_so() -> None:
    outage = None
    for i in range(3):
        outage = supervision.after_outage_failure(outage, T0 + i, f"refused {i}", base_s=1, cap_s=5, jitter=0.0)
    assert outage is not None
    assert (outage.since, outage.attempts, outage.last_error) == (T0, 3, "refused 2")
    assert outage.summary() == "database unreachable since 17:35:31 (3 attempts)"
    assert supervision.outage_wait_s(outage, T0 + 2, default_s=10) == pytest.approx(2.0)  # 4 s ceiling, half
    assert supervision.outage_wait_s(None, T0, default_s=10) == 10
    assert outage.as_dict(T0 + 10)["seconds"] == 10.0
    one = supervision.after_outage_failure(None, T0, "x", base_s=1, cap_s=5, jitter=0.5)
    assert one.summary().endswith("(1 attempt)")


def test_only_an_outage_past_the_limit_is_over_it() -> None:
    outage = supervision.after_outage_failure(None, T0, "down", base_s=1, cap_s=5, jitter=0.5)
    assert not supervision.outage_over_limit(outage, T0 + 600, 600)
    assert supervision.outage_over_limit(outage, T0 + 600.5, 600)
    assert not supervision.outage_over_limit(None, T0 + 10_000, 600)


def test_the_record_of_an_outage_names_its_start_end_and_what_waited() -> None:
    outage = supervision.after_outage_failure(None, T0, "connection refused", base_s=1, cap_s=5, jitter=0.5)
    record = supervision.outage_record(outage, T0 + 31, ["4 Scaler cycle(s) without a decision"])
    assert record.reason() == (
        "database_outage: unreachable from 17:35:31 to 17:36:02 (31 s, 1 attempt; last error: connection refused); "
        "waited: 4 Scaler cycle(s) without a decision"
    )
    assert record.details()["seconds"] == 31.0 and record.details()["waited"] == [
        "4 Scaler cycle(s) without a decision"
    ]
    assert supervision.outage_record(outage, T0 - 5, ()).seconds == 0.0  # clocks apart: never negative


# --- heartbeat silence judged from the database's return ------------------------------------------


def test_an_active_worker_silent_through_an_outage_is_not_lost_when_the_database_returns() -> None:
    last_beat = T0
    back = T0 + 20  # the database was away for 20 s, longer than the 15 s heartbeat timeout
    silent = Observation(pod_phase=PodPhase.RUNNING, last_heartbeat_at=last_beat)
    lost = next_transition(S.ACTIVE, silent, now=back + 1, created_at=T0 - 100, state_since=T0 - 50, config=CFG)
    assert lost is not None and lost.code == "heartbeat_lost" and lost.heartbeat_silence
    after = Observation(pod_phase=PodPhase.RUNNING, last_heartbeat_at=last_beat, silence_counts_from=back)
    assert next_transition(S.ACTIVE, after, now=back + 1, created_at=T0 - 100, state_since=T0 - 50, config=CFG) is None
    # Still silent a heartbeat timeout after the return: lost, and the reason measures from the return.
    late = next_transition(S.ACTIVE, after, now=back + 16, created_at=T0 - 100, state_since=T0 - 50, config=CFG)
    assert late is not None and late.code == "heartbeat_lost" and "16s" in late.reason


@given(
    silent_before=st.floats(min_value=0, max_value=3600),
    since_back=st.floats(min_value=0, max_value=CFG.heartbeat_timeout_s),
    state=st.sampled_from([S.ACTIVE, S.DRAINING]),
)
def test_no_worker_is_lost_within_a_heartbeat_timeout_of_the_databases_return(
    silent_before: float, since_back: float, state: WorkerState
) -> None:
    back = T0 + 1000
    obs = Observation(
        pod_phase=PodPhase.RUNNING,
        last_heartbeat_at=back - silent_before,
        tasks_in_progress=1,
        silence_counts_from=back,
    )
    result = next_transition(state, obs, now=back + since_back, created_at=T0, state_since=T0, config=CFG)
    assert result is None or not result.heartbeat_silence


def test_a_worker_booting_through_an_outage_gets_a_heartbeat_timeout_after_it() -> None:
    created = T0
    back = created + CFG.spawn_timeout_s + 10  # the spawn timeout passed while the database was away
    booting = Observation(pod_phase=PodPhase.RUNNING, last_heartbeat_at=None)
    timed_out = next_transition(S.SPAWNING, booting, now=back + 1, created_at=created, state_since=created, config=CFG)
    assert timed_out is not None and timed_out.code == "spawn_timeout"
    waiting = Observation(pod_phase=PodPhase.RUNNING, last_heartbeat_at=None, silence_counts_from=back)
    assert (
        next_transition(S.SPAWNING, waiting, now=back + 1, created_at=created, state_since=created, config=CFG) is None
    )
    beat = Observation(pod_phase=PodPhase.RUNNING, last_heartbeat_at=back + 2, silence_counts_from=back)
    promoted = next_transition(S.SPAWNING, beat, now=back + 3, created_at=created, state_since=created, config=CFG)
    assert promoted is not None and promoted.to is S.ACTIVE
    late = next_transition(S.SPAWNING, waiting, now=back + 16, created_at=created, state_since=created, config=CFG)
    assert late is not None and late.code == "spawn_timeout"


def test_only_silence_is_marked_as_such() -> None:
    gone = Observation(pod_phase=PodPhase.GONE, last_heartbeat_at=T0)
    lost = next_transition(S.ACTIVE, gone, now=T0 + 1, created_at=T0 - 100, state_since=T0 - 50, config=CFG)
    assert lost is not None and lost.code == "pod_lost" and not lost.heartbeat_silence


# --- many workers silent at once: an infrastructure fault -----------------------------------------


def view(worker_id: str, state: WorkerState, last_beat: float | None) -> WorkerView:
    return WorkerView(id=worker_id, state=state, created_at=T0 - 300, promoted_at=T0 - 200, last_heartbeat_at=last_beat)


def judge(workers: list[WorkerView], now: float, counts_from: float | None = None) -> supervision.FleetSilence:
    return supervision.fleet_silence(workers, now, timeout_s=15, counts_from=counts_from, share=0.5, min_workers=2)


def test_most_of_the_fleet_silent_at_once_is_an_infrastructure_fault() -> None:
    now = T0 + 100
    fleet = [view("a", S.ACTIVE, now - 30), view("b", S.DRAINING, now - 30), view("c", S.ACTIVE, now - 1)]
    fleet.append(view("d", S.SPAWNING, None))  # not expected to heartbeat yet: not counted
    silence = judge(fleet, now)
    assert silence.silent == ("a", "b") and silence.expected == 3 and silence.infrastructure_fault
    assert silence.reason.startswith("infrastructure_fault: 2 of 3 workers silent")
    hold, note = supervision.hold_after(silence, now, 60)
    assert hold == now + 60 and note is not None and "re-checked at" in note
    assert supervision.silence_held(hold, now + 59) and not supervision.silence_held(hold, now + 60)


def test_one_silent_worker_is_its_own_failure_however_small_the_fleet() -> None:
    now = T0 + 100
    alone = judge([view("a", S.ACTIVE, now - 30)], now)
    assert alone.silent == ("a",) and not alone.infrastructure_fault  # 1 of 1, but fewer than min_workers
    some = judge(
        [
            view("a", S.ACTIVE, now - 30),
            view("b", S.ACTIVE, now - 30),
            *(view(f"ok{i}", S.ACTIVE, now) for i in range(3)),
        ],
        now,
    )
    assert not some.infrastructure_fault  # 2 of 5: not more than half
    assert supervision.hold_after(some, now, 60) == (None, None)


def test_silence_counts_from_the_databases_return_for_the_whole_fleet() -> None:
    now = T0 + 100
    fleet = [view(w, S.ACTIVE, now - 30) for w in "abc"]
    assert judge(fleet, now, counts_from=now - 5).silent == ()


@given(
    ages=st.lists(st.floats(min_value=0, max_value=100), min_size=0, max_size=12),
)
def test_a_fault_needs_more_than_the_share_and_at_least_the_minimum(ages: list[float]) -> None:
    now = T0 + 1000
    silence = judge([view(f"w{i}", S.ACTIVE, now - age) for i, age in enumerate(ages)], now)
    lost = sum(1 for age in ages if age > 15)
    assert len(silence.silent) == lost
    assert silence.infrastructure_fault == (lost >= 2 and lost > 0.5 * len(ages))


# --- forensics: one event with its start, end and what waited -------------------------------------


def test_explain_shows_an_outage_as_one_event_and_no_silence() -> None:
    from orchestrator import forensics
    from store.base import OrchestratorEvent, OrchestratorEventKind

    def t(minutes: float) -> datetime:
        return datetime(2025, 10, 16, 17, 30, tzinfo=UTC) + timedelta(minutes=minutes)

    outage = OrchestratorEvent(
        id=1,
        at=t(5),
        ended_at=t(6),
        kind=OrchestratorEventKind.DATABASE_OUTAGE,
        holder="host/scaler",
        reason="database_outage: unreachable from 17:35:00 to 17:36:00 (60 s, 9 attempts; last error: refused)",
        details={"attempts": 9, "waited": ["12 Scaler cycle(s) without a decision", "3 task(s) in progress"]},
    )
    gaps: list[forensics.Gap] = [(t(4.9), t(6.1)), (t(10), t(14))]  # the outage, then a real silence
    report = forensics.build_timeline(
        since=t(0), until=t(20), decisions=[], events=[], gaps=gaps, cycle_interval_s=10, runs=[outage]
    )
    assert [(s.start, s.end) for s in report.silences] == [(t(10), t(14))]
    text = forensics.render_timeline(report)
    assert (
        "Database unreachable from 17:35:00 to 17:36:00 (1 min, 9 attempts): the orchestrator waited and decided "
        "nothing meanwhile (no silence, no worker lost for it); waited: 12 Scaler cycle(s) without a decision; "
        "3 task(s) in progress"
    ) in text, text
    assert "  17:35:00 database unreachable from 17:35:00 to 17:36:00" in text, text
    assert text.count("ORCHESTRATOR SILENT") == 1
    data = report.to_json()
    assert data["outages"][0]["attempts"] == 9 and data["counts"]["database_outages"] == 1
    at = forensics.build_at_report(
        at=t(5.5), since=t(4), until=t(7), decisions=[], events=[], gaps=gaps[:1], cycle_interval_s=10, runs=[outage]
    )
    rendered = forensics.render_at(at)
    assert "SILENT" not in rendered and "Database unreachable from 17:35:00" in rendered


# --- what the demo shows -----------------------------------------------------------------------------


def test_the_live_view_names_the_outage() -> None:
    from orchestrator import live_view

    snap = live_view.Snapshot(
        elapsed_s=42,
        speed=10,
        trace_name="demo.csv",
        submitted=3,
        total=17,
        queued=1,
        running=2,
        done=0,
        failed=0,
        database_outage="database unreachable since 17:35:31 (4 attempts)",
    )
    assert live_view.plain_line(snap) == (
        "[   42s] database unreachable since 17:35:31 (4 attempts): waiting for it (nothing is decided meanwhile)"
    )
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(live_view.render(snap))
    assert "database unreachable since 17:35:31 (4 attempts): waiting for it" in console.export_text()


def test_the_demo_waits_out_an_outage_and_gives_up_only_past_its_limit(tmp_path) -> None:
    import time

    from config.settings import OrchestratorSettings
    from orchestrator.demo import replay, runtime, view
    from store.base import DatabaseUnavailable

    settings = OrchestratorSettings(database={"outage_limit_s": 30.0})
    watcher = view.View(runtime.Runtime(settings), replay.Replay([], 10.0), trace_name="t", speed=10, duration_s=60)
    said: list[str] = []
    wait = watcher.database_unreachable(DatabaseUnavailable("postgres at x is unreachable"), said.append)
    assert 0 < wait <= settings.database.outage_backoff_cap_s
    assert said == [
        "the database is unreachable (postgres at x is unreachable); waiting for it, nothing is decided meanwhile"
    ]
    watcher.database_unreachable(DatabaseUnavailable("still"), said.append)
    assert len(said) == 1  # said once when it begins
    assert watcher.outage_snapshot("running").database_outage.endswith("(2 attempts)")  # type: ignore[union-attr]
    assert watcher.outage is not None
    watcher.outage = supervision.Outage(since=time.time() - 31, attempts=9, last_error="x", next_at=0)
    with pytest.raises(view.OutageTooLong, match=r"longer than database.outage_limit_s \(30 s"):
        watcher.database_unreachable(DatabaseUnavailable("still"), said.append)
    watcher.outage = supervision.Outage(since=time.time() - 12, attempts=9, last_error="x", next_at=0)
    assert watcher.database_back(said.append) == pytest.approx(12, abs=1)
    assert said[-1].startswith("the database answers again after 12 s (9 attempts)")
    assert watcher.database_back(said.append) == 0.0


def test_an_infrastructure_fault_is_recorded_once_per_episode() -> None:
    now = T0 + 100
    fault = judge([view(w, S.ACTIVE, now - 30) for w in "abc"], now)
    calm = judge([view(w, S.ACTIVE, now) for w in "abc"], now)
    assert supervision.fault_episode(fault, recorded=False) == (True, True)
    assert supervision.fault_episode(fault, recorded=True) == (False, True)  # still the same episode
    assert supervision.fault_episode(calm, recorded=True) == (False, False)  # over: the next one is new


def test_explain_shows_an_infrastructure_fault_as_what_it_is() -> None:
    from orchestrator import forensics
    from store.base import OrchestratorEvent, OrchestratorEventKind

    at = datetime(2025, 10, 16, 17, 40, tzinfo=UTC)
    fault = OrchestratorEvent(
        id=1,
        at=at,
        kind=OrchestratorEventKind.INFRASTRUCTURE_FAULT,
        holder="host/scaler",
        reason="infrastructure_fault: 3 of 3 workers silent past 15s at once (...): gpu-a, gpu-b, gpu-c",
    )
    report = forensics.build_timeline(
        since=at - timedelta(minutes=5),
        until=at + timedelta(minutes=5),
        decisions=[],
        events=[],
        gaps=[],
        cycle_interval_s=10,
        runs=[fault],
    )
    assert "  17:40:00 infrastructure_fault: 3 of 3 workers silent" in forensics.render_timeline(report)
