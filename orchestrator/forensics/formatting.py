"""How every report writes times, durations and trace ids, so the three reports read alike.

Times are UTC everywhere: `clock` (17:55:06) inside a report, `stamp` for a full date, `iso` (with
a `Z`) in JSON.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["clock", "format_duration", "iso", "stamp", "trace_id_of"]

_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def format_duration(seconds: float) -> str:
    """`56 s`, `2 min 37 s`, `3 h 5 min`, `2 d 4 h`: short and exact enough for a timeline."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def clock(at: datetime) -> str:
    """`17:55:06` (UTC)."""
    return at.astimezone(UTC).strftime("%H:%M:%S")


def stamp(at: datetime) -> str:
    """`2025-10-16 17:55:06 UTC`."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(at: datetime | None) -> str | None:
    """`2025-10-16T17:55:06Z`, or None."""
    return None if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`), or None."""
    if not traceparent:
        return None
    parts = traceparent.strip().split("-")
    if len(parts) >= 3 and _TRACE_ID.fullmatch(parts[1]):
        return parts[1]
    return None
