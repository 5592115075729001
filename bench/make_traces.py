"""Regenerate the shipped traces in bench/traces/ (seeded: the same files every time).

    .venv/bin/python bench/make_traces.py
    .venv/bin/python bench/make_traces.py --unseen DIR [--seed N]

`--unseen` writes traces of other shapes instead (never used to tune the policy): short tasks in a
dense stream, long tasks arriving rarely, a ramp up and down, bursts on top of a steady stream, a
week-end-like quiet day with a few jobs, each drawn from `--seed`.

Columns: arrival_s,task_type,user_id,duration_s,depends_on (0-based row index of the parent).
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

OUT = Path(__file__).parent / "traces"

Row = tuple[float, str, str, float, int | None]


def _write(name: str, rows: list[Row], out: Path = OUT) -> None:
    rows = sorted(rows, key=lambda r: r[0])
    # Stable sort: rows with dependencies come already sorted (parents first), so indexes hold.
    with open(out / f"{name}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arrival_s", "task_type", "user_id", "duration_s", "depends_on"])
        for r in rows:
            w.writerow([f"{r[0]:.1f}", r[1], r[2], f"{r[3]:.1f}", "" if r[4] is None else r[4]])


def _jobs(jobs: list[tuple[float, str, int, random.Random]]) -> list[Row]:
    """Orchestrator + segments jobs, keeping each parent before its children in arrival order."""
    flat: list[tuple[float, str, str, float, tuple[int, int] | None]] = []
    for j, (at, user, segments, rng) in enumerate(jobs):
        flat.append((at, "travel_orchestrator", user, rng.uniform(20, 45), None))
        for k in range(segments):
            flat.append((at + 0.1 * (k + 1), "travel_segment", user, rng.uniform(120, 300), (j, k)))
    flat.sort(key=lambda r: r[0])
    parent_row: dict[int, int] = {}
    rows: list[Row] = []
    job_of_parent = {}
    for j, (at, *_rest) in enumerate(jobs):
        job_of_parent[at] = j
    for i, r in enumerate(flat):
        if r[4] is None:
            parent_row[job_of_parent[r[0]]] = i
            rows.append((r[0], r[1], r[2], r[3], None))
        else:
            rows.append((r[0], r[1], r[2], r[3], parent_row[r[4][0]]))
    return rows


def steady(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    t = 0.0
    while True:
        t += rng.expovariate(1 / 100)
        if t > 4 * 3600:
            return rows
        rows.append((t, "travel_segment", f"user-{rng.randrange(8)}", rng.uniform(120, 360), None))


def bursty(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    t = 300.0
    while t < 6 * 3600:
        n = rng.randint(8, 25)
        for _ in range(n):
            rows.append(
                (t + rng.uniform(0, 60), "travel_segment", f"user-{rng.randrange(5)}", rng.uniform(90, 300), None)
            )
        t += rng.uniform(25, 55) * 60
    t = 0.0
    while t < 6 * 3600:
        t += rng.expovariate(1 / 900)
        rows.append((t, "travel_orchestrator", f"user-{rng.randrange(5)}", rng.uniform(60, 200), None))
    return rows


def diurnal(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    peak_rate = 1 / 45
    t = 0.0
    while True:
        t += rng.expovariate(peak_rate)
        if t > 24 * 3600:
            return rows
        # Low at night (t=0 is midnight), high mid-afternoon.
        level = 0.5 * (1 - math.cos(2 * math.pi * (t - 3 * 3600) / 86_400))
        if rng.random() < 0.05 + 0.95 * level:
            rows.append((t, "travel_segment", f"user-{rng.randrange(30)}", rng.uniform(60, 400), None))


def many_users(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    # One heavy user drops 25 tasks at once; the per-user limit lets 3 run at a time, so a policy
    # that scales on `queued` (not `claimable`) launches workers that have nothing to claim.
    for _ in range(25):
        rows.append((900 + rng.uniform(0, 20), "travel_segment", "user-heavy", rng.uniform(120, 240), None))
    for u in range(40):
        for _ in range(rng.randint(2, 5)):
            rows.append((rng.uniform(0, 3 * 3600), "travel_segment", f"user-{u:02d}", rng.uniform(90, 300), None))
    return rows


def incident_evening(rng: random.Random) -> list[Row]:
    """17:00-19:00 UTC on 2025-10-16, t=0 at 17:00:00: sparse orchestrator+segment jobs.

    Work arrived just before the scale-ups of the report (17:30:23, 17:42:49, 17:55:06) and kept
    coming in small jobs through the evening.
    """
    jobs = [
        (1800.0, "user-a", 1, rng),  # 17:30 -> worker created 17:30:23
        (2555.0, "user-b", 2, rng),  # 17:42:35 -> two workers 17:42:49 / 17:42:52
        (3295.0, "user-a", 1, rng),  # 17:54:55 -> the investigated 17:55:06 scale-up
        (3420.0, "user-c", 1, rng),  # 17:57:00 -> more work while worker 2 was still booting
        (3700.0, "user-a", 2, rng),
        (4300.0, "user-b", 1, rng),
        (4620.0, "user-c", 3, rng),
        (5400.0, "user-a", 1, rng),
        (5560.0, "user-b", 2, rng),
        (6300.0, "user-c", 1, rng),
        (6800.0, "user-a", 2, rng),
    ]
    return _jobs(jobs)


def short_dense(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    t = 0.0
    while (t := t + rng.expovariate(1 / 25)) < 3 * 3600:
        rows.append((t, "thumbnail", f"user-{rng.randrange(20)}", rng.uniform(10, 60), None))
    return rows


def long_rare(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    t = 0.0
    while (t := t + rng.expovariate(1 / 700)) < 8 * 3600:
        rows.append((t, "train", f"user-{rng.randrange(6)}", rng.uniform(600, 2400), None))
    return rows


def ramp(rng: random.Random) -> list[Row]:
    rows: list[Row] = []
    t = 0.0
    while (t := t + rng.expovariate(1 / 30)) < 6 * 3600:
        level = 1 - abs(t - 3 * 3600) / (3 * 3600)  # 0 -> 1 -> 0 over six hours
        if rng.random() < level:
            rows.append((t, "travel_segment", f"user-{rng.randrange(12)}", rng.uniform(60, 300), None))
    return rows


def bursts_on_stream(rng: random.Random) -> list[Row]:
    rows = [r for r in steady(rng) if r[0] < 3 * 3600]
    for start in (1800.0, 5400.0, 9000.0):
        for _ in range(rng.randint(10, 18)):
            rows.append(
                (start + rng.uniform(0, 120), "travel_segment", f"user-b{rng.randrange(6)}", rng.uniform(60, 240), None)
            )
    return rows


def quiet_day(rng: random.Random) -> list[Row]:
    starts = sorted(rng.uniform(0, 12 * 3600) for _ in range(14))
    return _jobs([(at, f"user-{rng.randrange(4)}", rng.randint(1, 4), rng) for at in starts])


UNSEEN = [
    ("short-dense", short_dense),
    ("long-rare", long_rare),
    ("ramp", ramp),
    ("bursts-on-stream", bursts_on_stream),
    ("quiet-day", quiet_day),
]


def write_unseen(folder: Path, seed: int, only: str | None = None) -> list[Path]:
    """`--unseen folder --seed seed`: every unseen shape (or just `only`), each drawn from its own
    generator, so one shape's rows do not depend on which others are written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, (name, fn) in enumerate(UNSEEN):
        if only is None or name == only:
            _write(name, fn(random.Random(seed * 100 + k)), folder)
            written.append(folder / f"{name}.csv")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unseen", type=Path, default=None, help="write the unseen shapes into this folder")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.unseen is not None:
        for path in write_unseen(args.unseen, args.seed):
            print(f"wrote {path}")
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, fn) in enumerate(
        [
            ("steady", steady),
            ("bursty", bursty),
            ("diurnal", diurnal),
            ("many-users", many_users),
            ("incident-evening", incident_evening),
        ]
    ):
        _write(name, fn(random.Random(1000 + seed)))
        print(f"wrote {OUT / name}.csv")


if __name__ == "__main__":
    main()
