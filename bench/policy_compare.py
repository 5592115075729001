"""Compare the default policy with the baselines and the clairvoyant references on every trace.

    .venv/bin/python bench/policy_compare.py [--seeds 3] [--traces DIR] [--plot docs/policy-bursty.png]

Prints a markdown table (figures are means over the seeds; each seed draws other boot times and
failures): per trace, each policy (`sim.baselines`) and reference (`sim.oracle`: `oracle`, the
clairvoyant zero-wait plan; `oracle-warm`, the same plan free to park pods in a warm pool;
`oracle-p95`, a clairvoyant plan allowed the anchor's p95 wait; `bound`,
the lower bound at the least wait) with billed/busy, waits and the fraction of the anchor's gap to
each reference it closes (`sim.compare`), and, for the default policy, whether it beats each
baseline on billed/busy at an equal or better p95 queue wait. `--traces DIR` runs every CSV of
DIR instead of the shipped traces. Saves one plot of the default policy on the bursty trace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator import simulate as simulate_cli  # noqa: E402
from sim import compare, engine  # noqa: E402
from sim import trace as sim_trace  # noqa: E402
from sim.baselines import POLICY_NAMES, make_policy  # noqa: E402

TRACES = ["steady", "bursty", "diurnal", "many-users", "incident-evening"]
POLICIES = list(POLICY_NAMES)
REFERENCES = ["oracle", "oracle-warm", "oracle-p95", "bound"]
COLUMNS = [
    ("billed_per_busy", "billed/busy", 2),
    ("gap_closed", "gap closed (oracle)", 2),
    ("gap_closed_warm", "gap closed (oracle-warm)", 2),
    ("gap_closed_p95", "gap closed (oracle-p95)", 2),
    ("wait_p50_s", "wait p50 s", 0),
    ("wait_p95_s", "wait p95 s", 0),
    ("wait_p99_s", "wait p99 s", 0),
    ("billed_gpu_s", "billed GPU-h", None),
    ("spawns", "spawns", 1),
    ("resumes", "resumes", 1),
    ("failed_spawns", "failed", 1),
    ("peak_workers", "peak", 1),
    ("killed_within_2min_of_promotion", "killed <2 min", 1),
    ("spawns_beyond_demand", "beyond demand", 1),
]


def run_all(seeds: int, paths: dict[str, Path]) -> dict[tuple[str, str], dict[str, float]]:
    out: dict[tuple[str, str], dict[str, float]] = {}
    names = POLICIES + REFERENCES
    for trace, path in paths.items():
        tasks = sim_trace.load_trace(path)
        runs = [compare.compare(tasks, engine.sim_scaling(), engine.SimParams(seed=s), names) for s in range(seeds)]
        for name in names:
            keys = set.intersection(*(set(r[name]) for r in runs))
            out[trace, name] = {k: mean(float(r[name][k]) for r in runs) for k in keys}
    return out


def _fmt(value: float | None, digits: int | None) -> str:
    if value is None:
        return ""
    if digits is None:
        return f"{value / 3600:.1f}"
    return f"{value:.{digits}f}"


def verdict(results: dict[tuple[str, str], dict[str, float]], trace: str, baseline: str) -> str:
    d, b = results[trace, "default"], results[trace, baseline]
    cheaper = d["billed_per_busy"] < b["billed_per_busy"]
    no_slower = d["wait_p95_s"] <= b["wait_p95_s"]
    if cheaper and no_slower:
        return "yes"
    return "no: " + ", ".join(
        part for part, bad in (("billed/busy higher", not cheaper), ("p95 wait longer", not no_slower)) if bad
    )


def table(results: dict[tuple[str, str], dict[str, float]], seeds: int, traces: list[str]) -> str:
    head = ["trace", "policy"] + [label for _, label, _ in COLUMNS] + ["default beats it?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for trace in traces:
        for name in POLICIES + REFERENCES:
            f = results[trace, name]
            cells = [trace, name] + [_fmt(f.get(k), digits) for k, _, digits in COLUMNS]
            cells.append("" if name == "default" or name in REFERENCES else verdict(results, trace, name))
            lines.append("| " + " | ".join(cells) + " |")
    tuned = ", ".join(f"{k}={v:g}" for k, v in engine.SIM_SCALING_OVERRIDES.items()) or "no overrides"
    lines.append("")
    lines.append(
        f"Means over {seeds} seed(s); boot uniform 56-157 s, 3% spawn errors, 3% pods that never heartbeat; "
        "a stopped pod resumes in 20-60 s, 10% of resumes refused, its disk billed at 2% of the GPU. "
        f"Default policy: production ScalingSettings with {tuned}. Gap closed: "
        f"({compare.ANCHOR} - policy) / ({compare.ANCHOR} - reference) in billed/busy."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--plot", default=str(ROOT / "docs" / "policy-bursty.png"), help="PNG to write; '' for none")
    parser.add_argument("--traces", type=Path, default=None, help="run every CSV of this folder instead")
    args = parser.parse_args()
    if args.traces is not None:
        paths = {p.stem: p for p in sorted(args.traces.glob("*.csv"))}
    else:
        paths = {t: ROOT / "bench" / "traces" / f"{t}.csv" for t in TRACES}
    results = run_all(args.seeds, paths)
    print(table(results, args.seeds, list(paths)))
    if args.plot:
        tasks = sim_trace.load_trace(ROOT / "bench" / "traces" / "bursty.csv")
        result = engine.simulate(tasks, make_policy("default"), engine.sim_scaling(), engine.SimParams())
        simulate_cli.plot(result, Path(args.plot), title="bursty trace, default policy (seed 0)")
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
