"""The demo's live terminal view: a pure function from a `Snapshot` to a rich renderable.

The demo polls the database and the actors into a `Snapshot` twice a second; this module only
draws it, so the layout is testable without Ray, Postgres or a terminal. `plain_line` is the
one-line form printed when stdout is not a terminal (CI, `| tee`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

__all__ = ["Snapshot", "WorkerLine", "decision_clauses", "plain_line", "render", "sparkline"]

_STATE_STYLE = {
    "spawning": "yellow",
    "active": "green",
    "draining": "cyan",
    "stopping": "blue",
    "stopped": "dim blue",
    "resuming": "yellow",
    "terminating": "magenta",
    "terminated": "dim",
    "error": "bold red",
}


@dataclass(frozen=True)
class WorkerLine:
    id: str
    state: str
    age_s: float
    tasks_in_progress: int = 0
    in_state_s: float | None = None  # since its last transition
    idle_s: float | None = None  # active and holding no task: for how long


@dataclass(frozen=True)
class Snapshot:
    elapsed_s: float
    speed: float
    trace_name: str
    submitted: int
    total: int
    queued: int
    running: int
    done: int
    failed: int
    workers: list[WorkerLine] = field(default_factory=list)
    last_decision_at: str | None = None
    last_decision: str | None = None
    shipper: dict[str, Any] | None = None
    shipper_error: str | None = None
    dashboard_url: str | None = None
    trace_endpoint: str | None = None
    spawns: int = 0
    terminations: int = 0
    phase: str = "running"
    last_decision_age_s: float | None = None
    fleet_history: tuple[int, ...] = ()  # live workers, one sample a second since the start
    max_workers: int | None = None
    # "database unreachable since HH:MM:SS (N attempts)" while it is; the rest is the last view read.
    database_outage: str | None = None


def _age(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _shipper_words(snap: Snapshot) -> Text:
    if snap.shipper_error:
        return Text(f"unreachable: {snap.shipper_error}", style="bold red")
    if not snap.shipper:
        return Text("starting", style="yellow")
    h = snap.shipper
    healthy = h.get("healthy") in (True, None)
    parts = []
    for key in ("shipped", "pending", "spool_bytes", "dropped", "last_flush_age_s", "last_error"):
        value = h.get(key)
        if value is not None:
            parts.append(f"{key} {value:.1f}" if isinstance(value, float) else f"{key} {value}")
    words = ("healthy; " if healthy else "UNHEALTHY; ") + ", ".join(parts)
    return Text(words, style="green" if healthy else "bold red")


_BARS = " ▁▂▃▄▅▆▇█"
_HISTORY_WIDTH = 100


def sparkline(values: tuple[int, ...] | list[int], top: int | None = None, width: int = _HISTORY_WIDTH) -> str:
    """Fleet size over time in block characters, at most `width` wide (buckets keep their max)."""
    if not values:
        return ""
    vals = list(values)
    if len(vals) > width:
        step = len(vals) / width
        vals = [max(vals[int(i * step) : max(int(i * step) + 1, int((i + 1) * step))]) for i in range(width)]
    peak = max(top or 0, max(vals), 1)
    return "".join(_BARS[round(v * (len(_BARS) - 1) / peak)] if v else "_" for v in vals)


def decision_clauses(reason: str) -> list[str]:
    """A policy reason cut at its `; ` joints, one clause a line (each one readable alone)."""
    return [c.strip() for c in reason.split("; ") if c.strip()]


def render(snap: Snapshot) -> Panel:
    """The whole view: tasks, workers, the last decision, LogShipper health, where to look."""
    tasks = Table.grid(padding=(0, 2))
    tasks.add_row(
        Text(f"submitted {snap.submitted}/{snap.total}"),
        Text(f"queued {snap.queued}", style="yellow"),
        Text(f"running {snap.running}", style="cyan"),
        Text(f"done {snap.done}", style="green"),
        Text(f"failed {snap.failed}", style="red" if snap.failed else "dim"),
        Text(f"spawns {snap.spawns}  terminations {snap.terminations}"),
    )
    live_now = snap.fleet_history[-1] if snap.fleet_history else len(snap.workers)
    fleet = Text.assemble(
        Text("fleet size ", style="bold"),
        Text(sparkline(snap.fleet_history, snap.max_workers) or "-", style="green"),
        Text(f"  now {live_now}" + (f" of max {snap.max_workers}" if snap.max_workers else ""), style="dim"),
    )
    workers = Table(title="workers", title_justify="left", show_edge=False)
    workers.add_column("id", no_wrap=True)
    workers.add_column("state", no_wrap=True)
    workers.add_column("in state", justify="right")
    workers.add_column("age", justify="right")
    workers.add_column("tasks", justify="right")
    workers.add_column("idle", justify="right")
    for w in snap.workers:
        workers.add_row(
            w.id,
            Text(w.state, style=_STATE_STYLE.get(w.state, "")),
            "" if w.in_state_s is None else _age(w.in_state_s),
            _age(w.age_s),
            str(w.tasks_in_progress),
            "" if w.idle_s is None else _age(w.idle_s),
        )
    if not snap.workers:
        workers.add_row(Text("none (the fleet is at zero)", style="dim"), "", "", "", "", "")
    decision = Text()
    if snap.last_decision:
        when = snap.last_decision_at or ""
        if snap.last_decision_age_s is not None:
            when += f" ({_age(snap.last_decision_age_s)} ago)"
        decision.append(when + "\n", style="bold")
        decision.append("\n".join("  " + c for c in decision_clauses(snap.last_decision)))
    else:
        decision.append("no decision yet", style="dim")
    where = Table.grid(padding=(0, 1))
    where.add_row("Ray dashboard:", snap.dashboard_url or "(starting)")
    where.add_row(
        "Traces (OTLP):", snap.trace_endpoint or "off (set OTEL_EXPORTER_OTLP_ENDPOINT to send them to Jaeger)"
    )
    where.add_row("Afterwards:", "orchestrator explain --worker <id>   |   orchestrator status")
    where.add_row("Stop:", "Ctrl-C (stops Ray, the pods and Postgres; nothing is left running)")
    title = f"orchestrator demo: {snap.trace_name} at {snap.speed:g}x, {_age(snap.elapsed_s)} elapsed ({snap.phase})"
    outage: list[Text] = []
    if snap.database_outage:
        outage = [
            Text(
                f"{snap.database_outage}: waiting for it; nothing is spawned, drained or terminated meanwhile "
                "(the figures below are from before it)",
                style="bold red",
            ),
            Text(""),
        ]
    return Panel(
        Group(
            *outage,
            tasks,
            fleet,
            Text(""),
            workers,
            Text(""),
            Text("last scaling decision (why the fleet is this size)", style="bold"),
            decision,
            Text(""),
            Text.assemble(Text("LogShipper: ", style="bold"), _shipper_words(snap)),
            Text(""),
            where,
        ),
        title=title,
        title_align="left",
    )


def _short(reason: str | None, limit: int = 140) -> str:
    """The first clause of a reason, cut at a word if it is still too long."""
    if not reason:
        return "-"
    first = next(iter(decision_clauses(reason)), reason)
    if len(first) <= limit:
        return first
    return first[:limit].rsplit(" ", 1)[0] + " ..."


def plain_line(snap: Snapshot) -> str:
    states: dict[str, int] = {}
    for w in snap.workers:
        states[w.state] = states.get(w.state, 0) + 1
    fleet = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no workers"
    if snap.database_outage:
        return f"[{_age(snap.elapsed_s):>6}] {snap.database_outage}: waiting for it (nothing is decided meanwhile)"
    return (
        f"[{_age(snap.elapsed_s):>6}] tasks {snap.submitted}/{snap.total} submitted: {snap.queued} queued, "
        f"{snap.running} running, {snap.done} done, {snap.failed} failed | {fleet} | "
        f"last decision: {_short(snap.last_decision)}"
    )
