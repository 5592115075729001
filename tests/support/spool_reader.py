"""Read-only view of a LogShipper spool directory: which record ids are on disk.

Decodes the frames of telemetry/spool.py (`magic | length | crc32 | count | msgpack payload`) without
opening a `Spool`, which would recover (truncate) the segments under the running LogShipper. A
frame still being written (a torn tail) ends its segment, as it does for the Spool.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import msgpack

from telemetry.spool import _HEADER, _MAGIC

__all__ = ["spooled_ids"]


def spooled_ids(directory: Path) -> set[str]:
    ids: set[str] = set()
    for path in sorted(Path(directory).glob("seg-*.spool")):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # flushed and deleted meanwhile
            continue
        offset = 0
        while offset + _HEADER.size <= len(data):
            magic, length, crc, _count = _HEADER.unpack_from(data, offset)
            start, end = offset + _HEADER.size, offset + _HEADER.size + length
            if magic != _MAGIC or end > len(data) or zlib.crc32(data[start:end]) != crc:
                break
            for record in msgpack.unpackb(data[start:end], raw=False):
                if isinstance(record, dict) and "id" in record:
                    ids.add(str(record["id"]))
            offset = end
    return ids
