"""The local fallback: where log records and alarms go when the database or the LogShipper can't take them.

Two sinks, both bounded and neither able to raise into the caller: a JSON-lines file (rotated once
past `max_bytes`, one backup kept; each batch is one `O_APPEND` write so processes sharing the file
do not interleave lines) and one short line per record on a stream (stderr for producers, stdout for
the LogShipper, where Ray's log files and `docker logs` pick it up). Text is redacted here too.

This is the last resort of the log handler and the LogShipper, so its own failures never go through
`logging` (that would feed the handler): each is counted (`errors`, and `orchestrator_errors`
with component `fallback`), and a file that cannot be written is said on the stream.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from telemetry import metrics
from telemetry import redact as redaction

__all__ = ["FallbackWriter", "format_line"]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # per file; one rotated backup, so 128 MiB at most


def _iso(at: Any) -> str:
    if isinstance(at, int | float):
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int((at % 1) * 1000):03d}Z"
    return str(at)


def format_line(record: Mapping[str, Any]) -> str:
    """A one-line human form of a record for the console."""
    where = record.get("source_id") or ""
    return (
        f"{_iso(record.get('at'))} {record.get('level', '?'):<8} [{where}] {record.get('logger') or ''}: "
        f"{redaction.redact(str(record.get('message', '')))}"
    )


class FallbackWriter:
    """Appends records to a JSON-lines file and echoes them on a stream; never raises."""

    def __init__(
        self,
        path: Path | str,
        *,
        stream: TextIO | None = None,
        echo: bool = True,
        max_bytes: int = DEFAULT_MAX_BYTES,
        reason_key: str = "fallback_reason",
    ) -> None:
        self.path = Path(path)
        self._reason_key = reason_key
        self._stream = stream
        self._echo = echo
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self.records_written = 0
        self.errors = 0
        self.last_error: str | None = None

    def write(self, records: Iterable[Mapping[str, Any]], *, note: str | None = None) -> int:
        """Write records (with an optional reason under `reason_key`); returns how many were written."""
        lines = []
        console = []
        for record in records:
            item = dict(record)
            if note:
                item[self._reason_key] = note
            item["message"] = redaction.redact(str(item.get("message", "")))
            if item.get("attributes"):
                item["attributes"] = redaction.redact_value(item["attributes"])
            lines.append(json.dumps(item, default=str, separators=(",", ":")))
            if self._echo:
                console.append(format_line(item))
        if not lines:
            return 0
        self._append(lines, console)
        return len(lines)

    def alarm(self, message: str, **fields: Any) -> None:
        """Write one orchestrator-level alarm (a restart, a drop summary) to both sinks."""
        record = {
            "at": time.time(),
            "level": "ERROR",
            "logger": "telemetry.alarm",
            "source_id": fields.pop("source_id", f"pid-{os.getpid()}"),
            "message": message,
            "attributes": fields,
        }
        self.write([record])

    def _append(self, lines: list[str], console: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._rotate_if_needed(len(data))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                self.records_written += len(lines)
            except OSError as exc:
                self.errors += 1
                metrics.record_error("fallback", "file_write")
                error = f"{type(exc).__name__}: {exc}"
                if error != self.last_error:  # said once per distinct failure, not once per batch
                    console.insert(0, f"fallback file {self.path} cannot be written ({error}); the stream only")
                self.last_error = error
            if console:
                stream = self._stream or sys.stderr
                try:
                    stream.write("\n".join(console) + "\n")
                    stream.flush()
                except Exception:  # nowhere left to say it: counted
                    self.errors += 1
                    metrics.record_error("fallback", "stream_write")

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming > self._max_bytes:
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
