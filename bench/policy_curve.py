"""The knobs that trade billed/busy against p95 queue wait, swept on every shipped trace.

    .venv/bin/python bench/policy_curve.py [--seed 0] [--plot bench/out/policy-curve.png]

`idle_timeout_s` and `max_workers` buy lower cost with longer waits; `min_workers` buys shorter
waits with idle cost. The sweep runs the `previous` policy (the default's rules without
`fleet.learning`): once the default has learned its workload, its idle workers follow the learned
headroom, not `idle_timeout_s`, so the knob no longer moves it along this curve.
For each trace this prints that policy's Pareto frontier over a grid of those knobs and, for
each baseline, the cheapest setting whose p95 wait is equal or better, and whether it is also
cheaper: what a baseline's operating point costs with fixed-timeout rules.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim import engine  # noqa: E402
from sim import trace as sim_trace  # noqa: E402
from sim.baselines import make_policy  # noqa: E402

TRACES = ["steady", "bursty", "diurnal", "many-users", "incident-evening"]
GRID = {
    "idle_timeout_s": [60.0, 150.0, 240.0, 400.0],
    "max_workers": [3, 4, 5, 6, 10],
    "min_workers": [0, 2],
}

Point = tuple[float, float, dict[str, float]]  # billed/busy, p95, knobs


def sweep(trace: str, seed: int) -> tuple[list[Point], dict[str, tuple[float, float]]]:
    tasks = sim_trace.load_trace(ROOT / "bench" / "traces" / f"{trace}.csv")
    params = engine.SimParams(seed=seed)
    points: list[Point] = []
    keys = list(GRID)
    for values in itertools.product(*(GRID[k] for k in keys)):
        knobs = dict(zip(keys, values, strict=True))
        f = engine.simulate(tasks, make_policy("previous"), engine.sim_scaling(knobs), params).figures
        points.append((float(f["billed_per_busy"]), float(f["wait_p95_s"]), knobs))
    baselines = {}
    for name in ("seed", "keda"):
        f = engine.simulate(tasks, make_policy(name), engine.sim_scaling(), params).figures
        baselines[name] = (float(f["billed_per_busy"]), float(f["wait_p95_s"]))
    return points, baselines


def frontier(points: list[Point]) -> list[Point]:
    best: list[Point] = []
    for p in sorted(points, key=lambda p: (p[0], p[1])):
        if not best or p[1] < best[-1][1]:
            best.append(p)
    return best


def _knobs(knobs: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in knobs.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="write the curves as a PNG here")
    args = parser.parse_args()
    curves = {}
    print(
        "| trace | baseline | its billed/busy, p95 | cheapest default setting with p95 <= it "
        "| billed/busy, p95 | beats? |"
    )
    print("|---|---|---|---|---|---|")
    for trace in TRACES:
        points, baselines = sweep(trace, args.seed)
        curves[trace] = (frontier(points), baselines)
        for name, (b_cost, b_p95) in baselines.items():
            ok = [p for p in points if p[1] <= b_p95]
            if not ok:
                print(f"| {trace} | {name} | {b_cost:.2f}, {b_p95:.0f} | none in the grid | | no |")
                continue
            cost, p95, knobs = min(ok, key=lambda p: (p[0], p[1]))
            beats = "yes" if cost < b_cost else "no"
            ours = f"{_knobs(knobs)} | {cost:.2f}, {p95:.0f}"
            print(f"| {trace} | {name} | {b_cost:.2f}, {b_p95:.0f} | {ours} | {beats} |")
    print("\nPareto frontier of the default policy per trace (billed/busy, p95 s, knobs):")
    for trace, (front, _) in curves.items():
        print(f"  {trace}: " + "; ".join(f"{c:.2f}/{w:.0f} ({_knobs(k)})" for c, w, k in front))
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(TRACES), figsize=(3.2 * len(TRACES), 3), dpi=80)
        for ax, (trace, (front, baselines)) in zip(axes, curves.items(), strict=True):
            ax.plot([p[0] for p in front], [p[1] for p in front], "o-", ms=3, label="default (frontier)")
            for name, (c, w) in baselines.items():
                ax.plot([c], [w], "s" if name == "seed" else "^", label=name)
            ax.set_title(trace, fontsize=9)
            ax.set_xlabel("billed/busy")
        axes[0].set_ylabel("p95 wait (s)")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
