"""explain's pure part: reading times, measuring silences, and wording a timeline from hand-made rows."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from fleet.models import DecisionKind
from orchestrator import forensics
from store.base import (
    DecisionRecord,
    OrchestratorEvent,
    OrchestratorEventKind,
    OrchestratorSignals,
    SignalGap,
    WorkerEvent,
)

T0 = datetime(2025, 10, 16, 17, 0, tzinfo=UTC)


def t(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(i: int, worker: str, minutes: float, frm: str | None, to: str, reason: str = "") -> WorkerEvent:
    return WorkerEvent(id=i, worker_id=worker, at=t(minutes), from_status=frm, to_status=to, reason=reason)


@pytest.mark.parametrize(
    ("text", "stamp", "tod"),
    [
        ("17:55", None, time(17, 55)),
        ("17:55:06", None, time(17, 55, 6)),
        ("2025-10-16T17:55:00Z", datetime(2025, 10, 16, 17, 55, tzinfo=UTC), None),
        ("2025-10-16 17:55", datetime(2025, 10, 16, 17, 55, tzinfo=UTC), None),
        ("2025-10-16T19:55:00+02:00", datetime(2025, 10, 16, 17, 55, tzinfo=UTC), None),
        ("90m", T0 - timedelta(minutes=90), None),
        ("2h ago", T0 - timedelta(hours=2), None),
        ("now", T0, None),
    ],
)
def test_parse_time(text: str, stamp: datetime | None, tod: time | None) -> None:
    assert forensics.parse_time(text, now=T0) == (stamp, tod)


@pytest.mark.parametrize("text", ["25:00", "17:61", "tomorrow", "17h55", ""])
def test_parse_time_names_the_bad_value(text: str) -> None:
    with pytest.raises(forensics.TimeParseError, match=repr(text)):
        forensics.parse_time(text, now=T0)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "0 s"), (56, "56 s"), (157, "2 min 37 s"), (120, "2 min"), (1175, "19 min 35 s"), (3900, "1 h 5 min")],
)
def test_format_duration(seconds: float, words: str) -> None:
    assert forensics.format_duration(seconds) == words


def test_silence_longer_than_threshold_counts_transitions_during_it() -> None:
    gaps: list[forensics.Gap] = [(t(35), t(55)), (t(55), None)]  # signals to 17:35:00, then one at 17:55
    events = [event(1, "w1", 42.8, None, "spawning"), event(2, "w1", 56, "spawning", "active")]
    silences = forensics.silences_from_gaps(gaps, since=t(30), until=t(60), threshold_s=20, events=events)
    assert len(silences) == 2
    first, last = silences
    assert (first.start, first.end, first.worker_transitions) == (t(35), t(55), 1)
    assert first.seconds == 20 * 60
    assert last.start == t(55) and last.end is None  # silent to the window's end


def test_no_silence_for_short_gaps_or_gaps_outside_the_window() -> None:
    gaps: list[forensics.Gap] = [(t(9.9), t(10.1)), (t(60), None), (t(1), t(9))]
    assert forensics.silences_from_gaps(gaps, since=t(10), until=t(50), threshold_s=20) == []


def test_gaps_of_the_database_answer() -> None:
    never = OrchestratorSignals()
    assert forensics.gaps_of(never) == [(None, None)]  # never heard from up to the window's end
    gap = SignalGap(start=t(35), end=t(55))
    still_silent = OrchestratorSignals(gaps=[gap], last_before=t(30), last_inside=t(55), signals_inside=1)
    assert forensics.gaps_of(still_silent) == [(t(35), t(55)), (t(55), None)]  # open end after the last
    heard_after = still_silent.model_copy(update={"first_after": t(61)})
    assert forensics.gaps_of(heard_after) == [(t(35), t(55))]
    only_before = OrchestratorSignals(last_before=t(1))
    assert forensics.gaps_of(only_before) == [(t(1), None)]


def test_at_report_links_a_decision_to_the_transitions_it_caused() -> None:
    decision = DecisionRecord(
        id=7,
        at=t(55.1),
        cycle_number=755,
        leader_epoch=1,
        holder="scaler",
        inputs={"queued": 2, "claimable": 2, "in_progress": 0, "capacity": 1, "desired": 2},
        spawn_count=1,
        drain_worker_ids=[],
        spawned_worker_ids=["w2"],
        reasons=["scale_up: spawn 1 because desired 2"],
    )
    events = [
        event(1, "w1", 42.8, None, "spawning", "spawn (decision not recorded)"),
        event(2, "w2", 55.1, None, "spawning", "spawn"),
        event(3, "w2", 56.03, "spawning", "active", "first heartbeat"),
    ]
    report = forensics.build_at_report(
        at=t(55),
        since=t(40),
        until=t(60),
        decisions=[decision],
        events=events,
        gaps=[(t(35.5), t(55.1)), (t(55.1), None)],
        cycle_interval_s=10,
    )
    text = forensics.render_at(report)
    assert "17:55:06 decision #7 (cycle 755, epoch 1, scaler): scale up, spawn 1 -> w2" in text
    assert "inputs:  queued 2, claimable 2, in_progress 0, desired 2, capacity 1" in text
    assert "17:56:01 worker w2 promoted to active (56 s spawning)" in text
    assert "Transitions no decision in this window accounts for:" in text
    assert "17:42:48 worker w1 created: spawn (decision not recorded)" in text
    assert "ORCHESTRATOR SILENT from 17:35:30 to 17:55:06 (19 min 36 s)" in text
    data = report.to_json()
    assert data["decisions"][0]["caused"][1]["seconds_in_previous_state"] == 55.8


def test_timeline_orders_silence_decisions_and_transitions() -> None:
    decision = DecisionRecord(
        id=1,
        at=t(55.1),
        cycle_number=1,
        leader_epoch=1,
        holder="s",
        inputs={"claimable": 2, "capacity": 1},
        spawn_count=1,
        drain_worker_ids=[],
        reasons=["scale_up"],
    )
    steady = decision.model_copy(update={"id": 2, "at": t(58), "spawn_count": 0, "reasons": ["steady"]})
    report = forensics.build_timeline(
        since=t(30),
        until=t(60),
        decisions=[decision, steady],
        events=[event(1, "w2", 55.1, None, "spawning"), event(2, "w2", 56.03, "spawning", "active")],
        gaps=[(t(35.5), t(55.1)), (t(55.1 + 29 / 6), None)],
        cycle_interval_s=10,
    )
    lines = forensics.render_timeline(report).splitlines()
    body = [line for line in lines if line[:2] in ("  ", "!!")]
    assert body[0].startswith("!!17:35:30 orchestrator goes silent")
    assert body[1].startswith("!!17:55:06 orchestrator heard from again")
    assert body[2].startswith("  17:55:06 decision #1 scale up: spawn 1 (claimable 2, capacity 1) -- scale_up")
    assert body[3] == "  17:55:06 worker w2 created"
    assert body[4] == "  17:56:01 worker w2 promoted to active (56 s spawning)"
    assert not any("steady" in line for line in body)  # no-change decisions only with --all-decisions
    assert report.counts["decisions"] == 2 and report.counts["decisions_with_change"] == 1


def test_trace_id_of_traceparent() -> None:
    assert forensics.trace_id_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert forensics.trace_id_of(None) is None
    assert forensics.trace_id_of("garbage") is None


def run_event(i: int, minutes: float, kind: str, reason: str) -> OrchestratorEvent:
    return OrchestratorEvent(id=i, at=t(minutes), kind=OrchestratorEventKind(kind), holder="host/scaler", reason=reason)


def test_a_clean_stop_is_reported_as_stopped_not_silent_until_the_next_start() -> None:
    # Signals every cycle to 17:40, the stop at 17:40, a straggling log at 17:40:30, then nothing to 17:50,
    # a start at 17:50 and signals again; a real outage from 17:52 to 17:58.
    runs = [run_event(1, 40, "stopped", "orchestrator down"), run_event(2, 50, "started", "leads with epoch 2")]
    gaps: list[forensics.Gap] = [(t(40.5), t(50)), (t(52), t(58))]
    report = forensics.build_timeline(
        since=t(30), until=t(60), decisions=[], events=[], gaps=gaps, cycle_interval_s=10, runs=runs
    )
    assert [(s.start, s.end) for s in report.silences] == [(t(52), t(58))]  # the outage, not the stop
    text = forensics.render_timeline(report)
    assert "Orchestrator stopped at 17:40:00 (orchestrator down); started again at 17:50:00" in text
    assert "  17:40:00 orchestrator stopped (orchestrator down; host/scaler)" in text
    assert "  17:50:00 orchestrator started (leads with epoch 2; host/scaler)" in text
    assert "ORCHESTRATOR SILENT from 17:52:00 to 17:58:00" in text
    assert report.to_json()["stops"][0]["started_again_at"] == "2025-10-16T17:50:00Z"
    # Never started again: everything after the stop is the stop, to the end of the window.
    report = forensics.build_at_report(
        at=t(45),
        since=t(35),
        until=t(55),
        decisions=[],
        events=[],
        gaps=[(t(40.5), None)],
        cycle_interval_s=10,
        runs=runs[:1],
    )
    text = forensics.render_at(report)
    assert "SILENT" not in text, text
    assert "Orchestrator stopped at 17:40:00 (orchestrator down); not started again since" in text


def test_a_decision_after_a_stop_ends_it() -> None:
    stops = forensics.stops_of([run_event(1, 40, "stopped", "demo ended")], [t(45)])
    assert [(s.at, s.until) for s in stops] == [(t(40), t(45))]


def test_decision_kind_is_read_from_the_row_not_from_its_reasons() -> None:
    capped = DecisionRecord(
        id=3,
        at=t(50),
        cycle_number=3,
        leader_epoch=1,
        holder="s",
        inputs={"claimable": 9, "capacity": 4},
        spawn_count=0,
        drain_worker_ids=[],
        reasons=["scale_up words that say nothing of the kind"],
        kind=DecisionKind.CAPPED,
    )
    assert (
        forensics.render_at(
            forensics.build_at_report(
                at=t(50), since=t(45), until=t(55), decisions=[capped], events=[], gaps=[], cycle_interval_s=10
            )
        ).count("capped at max_workers, no spawn")
        == 1
    )
    timeline = forensics.build_timeline(
        since=t(45), until=t(55), decisions=[capped], events=[], gaps=[], cycle_interval_s=10
    )
    assert timeline.entries[0].text.startswith("decision #3 capped at max_workers, no spawn")  # shown: a wish
    assert timeline.entries[0].data["decision"]["kind"] == "capped"


def test_a_note_is_shown_but_neither_counted_as_a_move_nor_splitting_a_phase() -> None:
    events = [
        event(1, "w3", 40, None, "spawning"),
        event(2, "w3", 41, "spawning", "active"),
        event(3, "w3", 45, "active", "terminating"),
        event(4, "w3", 46, "terminating", "terminating", "terminate_failed: provider 503, retry in 2s"),
        event(5, "w3", 48, "terminating", "terminated"),
    ]
    report = forensics.build_timeline(
        since=t(30), until=t(60), decisions=[], events=events, gaps=[], cycle_interval_s=10
    )
    text = forensics.render_timeline(report)
    assert "worker w3 note while terminating: terminate_failed: provider 503" in text
    # the terminated line measures its time in `terminating` from the move into it, not from the note
    assert "worker w3 terminated (3 min terminating)" in text, text
    assert report.counts["terminated"] == 1 and report.counts["created"] == 1
    assert sum(1 for e in events if forensics.is_note(e)) == 1
