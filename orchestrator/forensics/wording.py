"""How a decision and a worker transition are worded and serialized, shared by the three reports.

A decision prints the same in `--at`, `--worker` and `--since` (head line, key inputs first, every
reason, trace id), and a transition always says how long the worker spent in its previous state.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from fleet.models import DecisionKind
from orchestrator.forensics.formatting import clock, format_duration, iso
from store.base import DecisionRecord, WorkerEvent

__all__ = [
    "decision_changes",
    "decision_is_wish",
    "decision_json",
    "decision_kind",
    "decision_lines",
    "event_json",
    "inputs_line",
    "is_note",
    "previous_events",
    "resumed_ids",
    "transition_text",
]

# Inputs shown first, in this order, when a decision is printed; the rest follow alphabetically.
_KEY_INPUTS = (
    "queued",
    "claimable",
    "in_progress",
    "blocked_by_capacity",
    "blocked_by_deps",
    "blocked_by_settings",
    "desired",
    "capacity",
    "need",
    "surplus",
    "workers_spawning",
    "workers_active",
    "workers_draining",
    "workers_stopped",
    "workers_terminating",
    "workers_error",
    "breaker",
    "failure_rate",
    "boot_estimate_s",
    "keep_idle_s",
    "min_workers",
    "max_workers",
)

# What a transition is called in a timeline, by target state.
_VERBS = {
    "spawning": "created",
    "active": "promoted to active",
    "draining": "draining",
    "stopping": "stopping its pod (warm pool)",
    "stopped": "stopped, kept in the warm pool",
    "resuming": "resuming from the warm pool",
    "terminating": "terminating",
    "terminated": "terminated",
    "error": "error",
}

# The warm pool's part of a decision, kept in its inputs (actors/scaler.py): worker ids, comma-separated.
_WARM_POOL_ACTS = ("warm_pool_resume", "warm_pool_retire")


def resumed_ids(decision: DecisionRecord) -> list[str]:
    """The stopped workers a decision resumed from the warm pool."""
    named = decision.inputs.get("warm_pool_resume")
    return named.split(",") if isinstance(named, str) and named else []


def decision_changes(decision: DecisionRecord) -> bool:
    """Whether the decision spawned, drained, resumed or retired anything (most say "steady")."""
    warm_pool = any(decision.inputs.get(key) for key in _WARM_POOL_ACTS)
    return bool(decision.spawn_count or decision.drain_worker_ids or warm_pool)


# How each kind of decision (fleet.models.DecisionKind, stored with it) is called in a report.
_KIND_WORDS = {
    DecisionKind.SCALE_UP: "scale up",
    DecisionKind.PROBE: "probe spawn (breaker half-open)",
    DecisionKind.SCALE_DOWN: "scale down",
    DecisionKind.STEADY: "no change",
    DecisionKind.CAPPED: "capped at max_workers, no spawn",
    DecisionKind.BREAKER_OPEN: "breaker open, no spawn",
    DecisionKind.PROBE_PENDING: "waiting for the breaker's probe, no spawn",
    DecisionKind.SCALE_DOWN_HELD: "surplus kept for now",
}
# Kinds that change nothing but say the fleet wanted more than it got: shown in a timeline by default.
_WISHES = frozenset({DecisionKind.CAPPED, DecisionKind.BREAKER_OPEN})


def decision_kind(decision: DecisionRecord) -> str:
    """What the decision was, in words: its stored kind; for rows written before kinds were stored,
    what it did (spawn and drain counts), never a guess from its reasons' words."""
    if decision.kind is not None:
        return _KIND_WORDS[decision.kind]
    if decision.spawn_count and decision.drain_worker_ids:
        return "scale up and down"
    if decision.spawn_count:
        return "scale up"
    if decision.drain_worker_ids:
        return "scale down"
    return "no change"


def decision_is_wish(decision: DecisionRecord) -> bool:
    """A decision that changed nothing because a limit held the fleet back (max_workers, the breaker)."""
    return decision.kind in _WISHES


def inputs_line(inputs: dict[str, Any]) -> str:
    keys = [k for k in _KEY_INPUTS if inputs.get(k) is not None]
    return ", ".join(f"{k} {inputs[k]}" for k in keys)


def decision_json(decision: DecisionRecord) -> dict[str, Any]:
    return {
        "id": decision.id,
        "at": iso(decision.at),
        "cycle_number": decision.cycle_number,
        "leader_epoch": decision.leader_epoch,
        "holder": decision.holder,
        "kind": None if decision.kind is None else decision.kind.value,
        "kind_words": decision_kind(decision),
        "spawn_count": decision.spawn_count,
        "spawned_worker_ids": list(decision.spawned_worker_ids),
        "drain_worker_ids": list(decision.drain_worker_ids),
        "reasons": list(decision.reasons),
        "inputs": dict(decision.inputs),
        "breaker": dict(decision.breaker),
        "trace_id": decision.trace_id,
    }


def decision_lines(decision: DecisionRecord) -> list[str]:
    """A decision for people: a head line, then its inputs, reasons and trace id, indented."""
    when = clock(decision.at) if decision.at else "??:??:??"
    head = f"{when} decision #{decision.id} (cycle {decision.cycle_number}, epoch {decision.leader_epoch}"
    head += f", {decision.holder}): {decision_kind(decision)}"
    if decision.spawn_count:
        head += f", spawn {decision.spawn_count}"
        if decision.spawned_worker_ids:
            head += f" -> {', '.join(decision.spawned_worker_ids)}"
    if decision.drain_worker_ids:
        head += f", drain {', '.join(decision.drain_worker_ids)}"
    for word in ("resume", "park", "retire"):  # the warm pool's part, kept in the inputs
        named = decision.inputs.get(f"warm_pool_{word}")
        if isinstance(named, str) and named:
            head += f", {word} {named.replace(',', ', ')}"
    lines = [head]
    inputs = inputs_line(decision.inputs)
    if inputs:
        lines.append(f"  inputs:  {inputs}")
    for reason in decision.reasons:
        lines.append(f"  because: {reason}")
    if decision.trace_id:
        lines.append(f"  trace:   {decision.trace_id}")
    return lines


def event_json(event: WorkerEvent, previous: WorkerEvent | None) -> dict[str, Any]:
    return {
        "at": iso(event.at),
        "worker_id": event.worker_id,
        "from": event.from_status,
        "to": event.to_status,
        "reason": event.reason,
        "seconds_in_previous_state": None if previous is None else round((event.at - previous.at).total_seconds(), 1),
    }


def is_note(event: WorkerEvent) -> bool:
    """An event that records something about a worker without moving it (a failed terminate, a
    duplicate pod): same state before and after. Counts and phase durations skip it."""
    return event.from_status is not None and event.from_status == event.to_status


def previous_events(history: Sequence[WorkerEvent]) -> dict[int, WorkerEvent]:
    """Event id -> the same worker's transition before it, from each worker's full (or partial)
    history (notes are not transitions: a state's duration runs from the move into it)."""
    by_worker: dict[str, list[WorkerEvent]] = {}
    for event in history:
        if is_note(event):
            continue
        by_worker.setdefault(event.worker_id, []).append(event)
    previous: dict[int, WorkerEvent] = {}
    for events in by_worker.values():
        events.sort(key=lambda e: (e.at, e.id))
        for before, after in itertools.pairwise(events):
            previous[after.id] = before
    return previous


def transition_text(event: WorkerEvent, previous: WorkerEvent | None) -> str:
    if is_note(event):
        return f"worker {event.worker_id} note while {event.to_status}: {event.reason}"
    verb = _VERBS.get(event.to_status, event.to_status)
    text = f"worker {event.worker_id} {verb}"
    if previous is not None:
        text += f" ({format_duration((event.at - previous.at).total_seconds())} {previous.to_status})"
    if event.reason:
        text += f": {event.reason}"
    return text
