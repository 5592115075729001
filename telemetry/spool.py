"""The LogShipper's local spool: acknowledged log records wait here, on disk, for the database.

Append-only segment files `seg-<seq>.spool` of frames. A frame is one shipped batch:

    magic b"LGS1" | payload length (u32) | crc32 of payload (u32) | record count (u32) | payload

where the payload is a msgpack array of record maps (the same bytes the log handler sent, so
spooling costs no re-encoding). `append` writes and fsyncs a frame before the caller acknowledges.
A reader cursor (segment, offset) walks frames in order; `commit` advances it and deletes segments
that are wholly flushed. After a restart the cursor starts at the oldest segment, so everything not
yet deleted is replayed; `system_logs.id` dedupes what had already landed. A torn frame at the end
of the newest segment (SIGKILL mid-write: never acknowledged) is truncated away; a corrupt frame
elsewhere ends that segment, and what follows it is counted as dropped.

The spool is bounded (`max_bytes`): past it the oldest DEBUG records are removed first (segments
rewritten without them), then INFO; WARNING and above are never removed, and an append that still
does not fit is refused with `SpoolFull`. Every removal is counted by reason and level.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]

__all__ = ["Cursor", "Spool", "SpoolFull", "count_records"]

_MAGIC = b"LGS1"
_HEADER = struct.Struct(">4sIII")
_SEGMENT_BYTES = 8 * 1024 * 1024  # a segment is closed past this size, so flushed data is freed in steps
_READ_CHUNK = 4 * 1024 * 1024  # most bytes read from disk per read_batch call
_DROP_ORDER = ("DEBUG", "INFO")  # levels the bound may remove, in this order; WARNING+ are kept


class SpoolFull(Exception):
    """The spool is at its bound and holds nothing more it may drop."""


def count_records(payload: bytes) -> int:
    """The number of records in a msgpack array payload, without decoding them (ValueError if not an array)."""
    unpacker = msgpack.Unpacker()
    unpacker.feed(payload)
    try:
        return int(unpacker.read_array_header())
    except Exception as exc:
        raise ValueError(f"payload is not a msgpack array: {type(exc).__name__}") from None


@dataclass(frozen=True)
class Cursor:
    seq: int
    offset: int
    records: int  # records between the previous cursor and this one
    generation: int


class Spool:
    def __init__(
        self,
        directory: Path | str,
        *,
        max_bytes: int,
        segment_bytes: int = _SEGMENT_BYTES,
        on_drop: Callable[[str, int], None] | None = None,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._on_drop = on_drop or (lambda reason, n: None)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # seq -> bytes of complete frames
        self._counts: dict[int, int] = {}  # seq -> records in complete frames
        self._cursor_seq = 0
        self._cursor_offset = 0
        self._pending = 0  # records not yet committed as flushed
        self._generation = 0
        self._write_fd: int | None = None
        self._write_seq = 0
        self.replayed_records = 0
        self.pending_since: float | None = None
        self._recover()

    # --- recovery -----------------------------------------------------------------------------
    def _path(self, seq: int) -> Path:
        return self.directory / f"seg-{seq:012d}.spool"

    def _recover(self) -> None:
        seqs = sorted(int(p.stem.split("-")[1]) for p in self.directory.glob("seg-*.spool"))
        for p in self.directory.glob("seg-*.tmp"):
            p.unlink(missing_ok=True)
        for index, seq in enumerate(seqs):
            size, count, dropped_tail = self._scan(seq)
            if dropped_tail and index != len(seqs) - 1:
                self._on_drop("spool_corrupt", dropped_tail)
            os.truncate(self._path(seq), size)
            self._sizes[seq], self._counts[seq] = size, count
        self._write_seq = (seqs[-1] + 1) if seqs else 1
        self._cursor_seq = seqs[0] if seqs else self._write_seq
        self.replayed_records = self._pending = sum(self._counts.values())
        if self.replayed_records:
            self.pending_since = time.time()
        for seq in seqs:
            if self._sizes[seq] == 0:
                self._delete(seq)

    def _scan(self, seq: int) -> tuple[int, int, int]:
        """(bytes of valid frames, their records, records after the first bad frame if countable)."""
        data = self._path(seq).read_bytes()
        offset = count = 0
        while offset + _HEADER.size <= len(data):
            magic, length, crc, n = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            if magic != _MAGIC or end > len(data) or zlib.crc32(data[offset + _HEADER.size : end]) != crc:
                break
            offset, count = end, count + n
        return offset, count, 0 if offset == len(data) else 1

    # --- writing ------------------------------------------------------------------------------
    def append(self, payload: bytes, count: int) -> None:
        """Write one frame durably (fsync) before returning. Raises SpoolFull or OSError."""
        frame = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload), count) + payload
        with self._lock:
            if self.total_bytes() + len(frame) > self._max_bytes:
                self._make_room_locked(len(frame))
            if self._write_fd is None or self._sizes.get(self._write_seq, 0) >= self._segment_bytes:
                self._rotate_locked()
            assert self._write_fd is not None
            os.write(self._write_fd, frame)
            if self._fsync:
                os.fsync(self._write_fd)
            self._sizes[self._write_seq] = self._sizes.get(self._write_seq, 0) + len(frame)
            self._counts[self._write_seq] = self._counts.get(self._write_seq, 0) + count
            self._pending += count
            if self.pending_since is None:
                self.pending_since = time.time()

    def _rotate_locked(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_seq += 1
        self._write_fd = os.open(self._path(self._write_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._sizes.setdefault(self._write_seq, 0)
        self._counts.setdefault(self._write_seq, 0)
        if self._fsync:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    # --- reading ------------------------------------------------------------------------------
    def read_batch(self, max_records: int, *, start: Cursor | None = None) -> tuple[list[dict[str, Any]], Cursor]:
        """Decode whole frames from the commit cursor (or from `start`, a cursor returned earlier, when it
        is still valid and ahead of the commit cursor) until `max_records` is reached (at least one frame).
        """
        with self._lock:
            seq, offset, generation = self._cursor_seq, self._cursor_offset, self._generation
            if (
                start is not None
                and start.generation == generation
                and (start.seq, start.offset) > (seq, offset)
                and start.seq in self._sizes
            ):
                seq, offset = start.seq, start.offset
            records: list[dict[str, Any]] = []
            while len(records) < max_records:
                size = self._sizes.get(seq)
                if size is None:
                    break
                if offset >= size:
                    if seq >= self._write_seq:
                        break
                    seq, offset = seq + 1, 0
                    continue
                with open(self._path(seq), "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(min(size - offset, _READ_CHUNK))
                pos = 0
                while pos + _HEADER.size <= len(data) and len(records) < max_records:
                    _, length, _, _ = _HEADER.unpack_from(data, pos)
                    end = pos + _HEADER.size + length
                    if end > len(data):
                        if pos == 0:  # one frame larger than the chunk: read it whole
                            with open(self._path(seq), "rb") as fh:
                                fh.seek(offset)
                                data = fh.read(_HEADER.size + length)
                            continue
                        break
                    batch = msgpack.unpackb(data[pos + _HEADER.size : end], raw=False, strict_map_key=False)
                    records.extend(batch if isinstance(batch, list) else [batch])
                    pos = end
                offset += pos
                if pos == 0:
                    break
            return records, Cursor(seq, offset, len(records), generation)

    def commit(self, cursor: Cursor) -> bool:
        """Mark everything before `cursor` as flushed; False (nothing changes) if the spool was rewritten since."""
        with self._lock:
            if cursor.generation != self._generation:
                return False
            for seq in [s for s in self._sizes if s < cursor.seq]:
                self._delete(seq)
            self._cursor_seq, self._cursor_offset = cursor.seq, cursor.offset
            self._pending = max(0, self._pending - cursor.records)
            if cursor.seq != self._write_seq and cursor.offset >= self._sizes.get(cursor.seq, 0):
                self._delete(cursor.seq)
                self._cursor_seq, self._cursor_offset = cursor.seq + 1, 0
            self.pending_since = time.time() if self._pending else None
            return True

    def _delete(self, seq: int) -> None:
        if seq == self._write_seq and self._write_fd is not None:
            return  # the open write segment is freed by rotation, never from under the writer
        self._path(seq).unlink(missing_ok=True)
        self._sizes.pop(seq, None)
        self._counts.pop(seq, None)

    # --- bounds -------------------------------------------------------------------------------
    def _make_room_locked(self, needed: int) -> None:
        """Remove the oldest records of the lowest droppable level until `needed` bytes fit."""
        if self._write_fd is not None and self._sizes.get(self._write_seq, 0) > 0:
            self._rotate_locked()  # compact closed segments only
        for level in _DROP_ORDER:
            for seq in sorted(s for s in self._sizes if s != self._write_seq):
                if self.total_bytes() + needed <= self._max_bytes:
                    return
                self._rewrite_without_locked(seq, level)
        if self.total_bytes() + needed > self._max_bytes:
            raise SpoolFull(f"spool at {self.total_bytes()} of {self._max_bytes} bytes holds only WARNING and above")

    def _rewrite_without_locked(self, seq: int, level: str) -> None:
        start = self._cursor_offset if seq == self._cursor_seq else 0
        path = self._path(seq)
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read()
        kept: list[dict[str, Any]] = []
        removed = 0
        pos = 0
        while pos + _HEADER.size <= len(data):
            _, length, _, _ = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            for record in msgpack.unpackb(data[pos + _HEADER.size : end], raw=False, strict_map_key=False):
                if isinstance(record, dict) and record.get("level") == level:
                    removed += 1
                else:
                    kept.append(record)
            pos = end
        if not removed:
            return
        tmp = path.with_suffix(".tmp")
        payload = msgpack.packb(kept, use_bin_type=True, default=str) if kept else b""
        frame = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload), len(kept)) + payload if kept else b""
        with open(tmp, "wb") as fh:
            fh.write(frame)
            fh.flush()
            if self._fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        self._sizes[seq], self._counts[seq] = len(frame), len(kept)
        if seq == self._cursor_seq:
            self._cursor_offset = 0
        self._pending = max(0, self._pending - removed)
        self._generation += 1
        self._on_drop(f"spool_full:{level}", removed)
        if not kept:
            self._delete(seq)

    # --- figures ------------------------------------------------------------------------------
    def total_bytes(self) -> int:
        return sum(self._sizes.values())

    def pending_records(self) -> int:
        return self._pending

    def close(self) -> None:
        with self._lock:
            if self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
