"""Reading the times a person types at `orchestrator explain`: timestamps, ages and bare times.

Kept apart from the reports because it is the one part that faces free-form input: every way a
time can be written is tested here, and a time it cannot read is a `TimeParseError` whose message
names the value and shows what works (the command prints it as one line).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta

__all__ = ["TimeParseError", "parse_time"]

_BARE_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)(?:\s+ago)?$")
_AGO_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400}


class TimeParseError(ValueError):
    """A time the user typed that we cannot read; the message names it and shows what works."""


def parse_time(text: str, *, now: datetime) -> tuple[datetime | None, time | None]:
    """Read a user's time: a full timestamp (naive means UTC), `now`, `90m` / `2h ago` (before
    `now`), or a bare `HH:MM[:SS]` (UTC).

    Returns `(timestamp, None)`, or `(None, time_of_day)` for a bare time, whose day the caller
    picks (the most recent day with data at that time).
    """
    raw = text.strip()
    if raw.lower() == "now":
        return now, None
    ago = _AGO.match(raw.lower())
    if ago:
        return now - timedelta(seconds=float(ago[1]) * _AGO_SECONDS[ago[2]]), None
    match = _BARE_TIME.match(raw)
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            raise TimeParseError(f"cannot read the time {text!r}: hours 0-23, minutes and seconds 0-59")
        return None, time(hour, minute, second)
    candidate = raw.removesuffix(" UTC").replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise TimeParseError(
            f"cannot read the time {text!r}: use HH:MM, HH:MM:SS, a timestamp like 2025-10-16T17:55:00Z, "
            "or an age like 90m"
        ) from None
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed, None
