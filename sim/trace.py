"""Workload traces: the one loader of trace CSVs, for the simulator and the demo alike.

A trace is a header row, then `arrival_s,task_type,user_id,duration_s[,depends_on]` per task:
`arrival_s` (seconds from the start, >= 0), `duration_s` (> 0), non-empty `task_type` and
`user_id`, and `depends_on` (optional, may be empty), the 0-based index of an earlier data row.

The loader is strict: a bad row is an error that names the file, the line and the field, never a
row silently skipped or a task that waits forever on a parent that does not exist.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REQUIRED_COLUMNS", "TraceError", "TraceTask", "load_trace"]

REQUIRED_COLUMNS = ("arrival_s", "task_type", "user_id", "duration_s")


class TraceError(ValueError):
    """A trace CSV that cannot be used; the message names the file, the line and the field."""


@dataclass(frozen=True, slots=True)
class TraceTask:
    index: int  # 0-based data row
    arrival_s: float
    task_type: str
    user_id: str
    duration_s: float
    depends_on: int | None = None  # index of the parent row


def _number(where: str, field: str, text: str | None) -> float:
    if text is None:
        raise TraceError(f"{where}: {field}: missing (the row has fewer fields than the header)")
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{where}: {field}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceError(f"{where}: {field}: {text!r} is not a finite number")
    return value


def _text(where: str, field: str, text: str | None) -> str:
    if text is None:
        raise TraceError(f"{where}: {field}: missing (the row has fewer fields than the header)")
    if not text.strip():
        raise TraceError(f"{where}: {field}: empty")
    return text


def _parent(where: str, text: str | None, index: int) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        dep = int(text)
    except ValueError:
        raise TraceError(f"{where}: depends_on: {text!r} is not a row index") from None
    if not 0 <= dep < index:
        raise TraceError(f"{where}: depends_on {dep} is not an earlier row index (0..{index - 1})")
    return dep


def load_trace(path: str | Path) -> list[TraceTask]:
    """The tasks of a trace CSV, in file order. Raises TraceError on bad content, OSError if unreadable."""
    tasks: list[TraceTask] = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(REQUIRED_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise TraceError(f"{path}:1: missing column(s) {', '.join(sorted(missing))}")
        for n, row in enumerate(reader):
            where = f"{path}:{reader.line_num}"
            if None in row:  # DictReader puts the fields beyond the header under the key None
                raise TraceError(f"{where}: more fields than the header has columns")
            arrival = _number(where, "arrival_s", row["arrival_s"])
            if arrival < 0:
                raise TraceError(f"{where}: arrival_s: {arrival:g} is negative (must be >= 0)")
            duration = _number(where, "duration_s", row["duration_s"])
            if duration <= 0:
                raise TraceError(f"{where}: duration_s: {duration:g} must be > 0")
            tasks.append(
                TraceTask(
                    index=n,
                    arrival_s=arrival,
                    task_type=_text(where, "task_type", row["task_type"]),
                    user_id=_text(where, "user_id", row["user_id"]),
                    duration_s=duration,
                    depends_on=_parent(where, row.get("depends_on"), n),
                )
            )
    return tasks
