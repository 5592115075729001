"""The spool keeps acknowledged records across restarts, survives a torn write, and drops DEBUG first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telemetry.log_handler import pack_records
from telemetry.spool import Spool


def records(n: int, level: str = "INFO", start: int = 0, size: int = 10) -> list[dict[str, Any]]:
    return [{"id": f"r{start + i}", "level": level, "message": "x" * size} for i in range(n)]


def test_replay_after_restart_and_commit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**7)
    for batch in range(3):
        spool.append(pack_records(records(10, start=batch * 10)), 10)
    got, cursor = spool.read_batch(15)
    assert [r["id"] for r in got] == [f"r{i}" for i in range(20)]  # whole frames only
    assert spool.commit(cursor) and spool.pending_records() == 10
    spool.close()

    again = Spool(tmp_path, max_bytes=10**7)  # a restart replays everything not deleted
    assert again.replayed_records == 30
    got, cursor = again.read_batch(1000)
    assert len(got) == 30
    again.commit(cursor)
    assert again.pending_records() == 0


def test_torn_tail_is_truncated(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10**7)
    spool.append(pack_records(records(5)), 5)
    spool.close()
    segment = next(tmp_path.glob("seg-*.spool"))
    with segment.open("ab") as fh:
        fh.write(b"LGS1\x00\x00\x10\x00garbage")  # a frame cut short by SIGKILL
    again = Spool(tmp_path, max_bytes=10**7)
    got, _ = again.read_batch(100)
    assert [r["id"] for r in got] == [f"r{i}" for i in range(5)]


def test_bound_drops_oldest_debug_first_and_counts(tmp_path: Path) -> None:
    drops: dict[str, int] = {}
    spool = Spool(
        tmp_path,
        max_bytes=30_000,
        segment_bytes=10_000,
        on_drop=lambda reason, n: drops.__setitem__(reason, drops.get(reason, 0) + n),
    )
    for i in range(8):
        spool.append(pack_records(records(5, "DEBUG", start=i * 10, size=500)), 5)
        spool.append(pack_records(records(5, "WARNING", start=i * 10 + 5, size=500)), 5)
    assert spool.total_bytes() <= 30_000
    assert drops.get("spool_full:DEBUG", 0) > 0 and "spool_full:WARNING" not in drops
    got, _ = spool.read_batch(10_000)
    assert sum(r["level"] == "WARNING" for r in got) == 40  # nothing above DEBUG was lost
    assert spool.pending_records() == len(got)
