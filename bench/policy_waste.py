"""Where each policy's billed GPU-seconds go, per busy GPU-second, beside the clairvoyant `oracle`.

    .venv/bin/python bench/policy_waste.py [--seeds 3] [--traces DIR] [--policies previous,default,keda]
        [--warm-pool-size N]

Per trace and policy (means over the seeds), billed/busy and its parts (`sim.waste`): boots of pods
that ran a task, boots and idle life of pods that never did, idle before a pod's first task, idle
gaps between its tasks no longer than a pod start (`oracle` keeps those too) and longer ones, idle
after its last task until the drain request, and the release; with a warm pool
(`--warm-pool-size`, the default policy's `scaling.warm_pool_size`), resumes of pods that ran a task
and of pods that did not, and the disk of stopped pods. The `oracle` row shows what the
clairvoyant zero-wait plan pays: its starts (boot + release) and the gaps it keeps. The difference
between a policy's row and the oracle's is the gap the policy has left to close, part by part.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim import engine, oracle, waste  # noqa: E402
from sim import trace as sim_trace  # noqa: E402
from sim.baselines import make_policy  # noqa: E402

TRACES = ["steady", "bursty", "diurnal", "many-users", "incident-evening"]
SHORT = {
    "boot_used": "boot used",
    "boot_unused": "boot unused",
    "idle_unused": "idle unused",
    "idle_before_first": "before 1st",
    "idle_gap_short": "gaps <= start",
    "idle_gap_long": "gaps > start",
    "idle_after_last": "after last",
    "release": "release",
    "resume_used": "resume used",
    "resume_unused": "resume unused",
    "stopped": "stopped disk",
}


def rows(path: Path, policies: list[str], seeds: int, warm_pool_size: int | None = None) -> dict[str, dict[str, float]]:
    tasks = sim_trace.load_trace(path)
    config = engine.sim_scaling({} if warm_pool_size is None else {"warm_pool_size": warm_pool_size})
    per: dict[str, list[dict[str, float]]] = {name: [] for name in [*policies, "oracle"]}
    for seed in range(seeds):
        params = engine.SimParams(seed=seed)
        plan = oracle.zero_wait_bound(tasks, config, params, drawn=True)
        start_s = float(plan["pod_start_price_s"])
        busy = float(plan["busy_gpu_s"])
        starts = float(plan["pod_starts"]) * start_s
        kept = float(plan["billed_gpu_s"]) - busy - starts
        ratio = float(plan["billed_per_busy"])
        per["oracle"].append({"billed_per_busy": ratio, "boot_used": starts / busy, "idle_gap_short": kept / busy})
        for name in policies:
            result = engine.simulate(tasks, make_policy(name), config, params)
            parts = waste.billed_breakdown(result, start_s)
            busy_s = float(result.figures["busy_gpu_s"])
            row = {part: seconds / busy_s for part, seconds in parts.items() if part != "busy"}
            row["billed_per_busy"] = float(result.figures["billed_per_busy"])
            row["wait_p95_s"] = float(result.figures["wait_p95_s"])
            per[name].append(row)
    return {name: {k: mean(r.get(k, 0.0) for r in runs) for k in runs[0]} for name, runs in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--traces", type=Path, default=None, help="run every CSV of this folder instead")
    parser.add_argument("--policies", default="previous,default,keda")
    parser.add_argument(
        "--warm-pool-size", type=int, default=None, help="scaling.warm_pool_size of the default policy (production's)"
    )
    args = parser.parse_args()
    paths = (
        {p.stem: p for p in sorted(args.traces.glob("*.csv"))}
        if args.traces is not None
        else {t: ROOT / "bench" / "traces" / f"{t}.csv" for t in TRACES}
    )
    policies = [p for p in args.policies.split(",") if p]
    head = ["trace", "policy", "billed/busy", "wait p95 s", *SHORT.values()]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for trace, path in paths.items():
        for name, row in rows(path, policies, args.seeds, args.warm_pool_size).items():
            p95 = f"{row['wait_p95_s']:.0f}" if "wait_p95_s" in row else "0"
            cells = [trace, name, f"{row['billed_per_busy']:.2f}", p95]
            cells += [f"{row.get(part, 0.0):.2f}" for part in SHORT]
            print("| " + " | ".join(cells) + " |")
    print(
        f"\nMeans over {args.seeds} seed(s), per busy GPU-second. A gap is 'short' when no longer than the "
        "oracle's price of a pod start (boot + release); the oracle's row is its starts (under 'boot used') "
        "and the short gaps it keeps."
    )


if __name__ == "__main__":
    main()
