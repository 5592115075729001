"""`orchestrator simulate`: run a scaling policy over a recorded workload and print what it cost.

The simulation itself lives in the `sim` package; this module parses options, prints the figures
(a table or `--json`) and draws `--plot` (matplotlib is imported only then).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sim import baselines, compare, engine, results
from sim import trace as sim_trace

_LABELS = {
    "tasks_done": "tasks done",
    "billed_gpu_s": "billed GPU-seconds",
    "busy_gpu_s": "busy GPU-seconds",
    "billed_per_busy": "billed / busy",
    "wait_p50_s": "queue wait p50 (s)",
    "wait_p95_s": "queue wait p95 (s)",
    "wait_p99_s": "queue wait p99 (s)",
    "spawns": "spawns",
    "failed_spawns": "failed spawns",
    "terminations": "terminations",
    "peak_workers": "peak workers",
    "killed_within_2min_of_promotion": "scaled down < 2 min after promotion",
    "spawns_beyond_demand": "spawns (or resumes) beyond demand",
    "parks": "parked in the warm pool",
    "resumes": "resumes",
    "resume_failures": "resumes refused",
    "stopped_billed_gpu_s": "of billed: stopped pods' disk",
}
# Figures of the comparison printed under every run: per policy or reference, these three.
_GAP_FIGURES = ("billed_per_busy", "wait_p95_s", "gap_closed", "gap_closed_p95")


def plot(result: results.SimResult, out: Path, title: str | None = None) -> None:
    """Demand, workers by state and queue wait over time, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result.timeline
    hours = [row["t"] / 3600 for row in tl]
    fig, axes = plt.subplots(3, 1, figsize=(8, 6), sharex=True, dpi=80)
    axes[0].plot(hours, [row["claimable"] for row in tl], label="claimable", lw=1)
    axes[0].plot(hours, [row["in_progress"] for row in tl], label="in progress", lw=1)
    axes[0].set_ylabel("tasks")
    axes[0].legend(loc="upper right", fontsize=8)
    states = ["active", "spawning", "resuming", "draining", "stopping", "stopped", "terminating", "error"]
    axes[1].stackplot(hours, *[[row[s] for row in tl] for s in states], labels=states)
    axes[1].set_ylabel("workers")
    axes[1].legend(loc="upper right", fontsize=7, ncol=3)
    axes[2].scatter([t / 3600 for t, _ in result.waits], [w for _, w in result.waits], s=4)
    axes[2].set_ylabel("queue wait (s)")
    axes[2].set_xlabel("hours")
    f = result.figures
    fig.suptitle(
        title
        or f"{result.policy}: billed/busy {f['billed_per_busy']}, wait p95 {f['wait_p95_s']}s, spawns {f['spawns']}",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def command(
    trace: Annotated[
        Path, typer.Option("--trace", help="Trace CSV: arrival_s,task_type,user_id,duration_s[,depends_on].")
    ],
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config; its `scaling` section drives the default policy.")
    ] = None,
    policy: Annotated[
        str,
        typer.Option(
            "--policy",
            help="default, seed or keda; or a clairvoyant reference: bound (zero-wait lower bound), "
            "oracle (zero-wait plan) or oracle-p95 (plan at the default's p95 wait).",
        ),
    ] = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    plot_to: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of the run here.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of boots and failures.")] = 0,
    boot: Annotated[
        str, typer.Option("--boot", help="Boot time distribution: uniform:LO:HI, lognormal:MEDIAN:SIGMA, fixed:S.")
    ] = engine.SimParams.boot,
    spawn_error_rate: Annotated[float, typer.Option(help="Fraction of spawns the provider refuses.")] = (
        engine.SimParams.spawn_error_rate
    ),
    no_heartbeat_rate: Annotated[float, typer.Option(help="Fraction of pods that never heartbeat.")] = (
        engine.SimParams.no_heartbeat_rate
    ),
    resume: Annotated[
        str,
        typer.Option("--resume", help="Warm pool: resume request to first heartbeat, distribution like --boot."),
    ] = engine.SimParams.resume,
    resume_error_rate: Annotated[
        float, typer.Option(help="Fraction of resumes the provider refuses (the host's GPUs were taken).")
    ] = engine.SimParams.resume_error_rate,
    new_task_seen_s: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds from a new task to the Scaler waking for it: reigh's probe (queue.new_task_probe_s); "
            "NOTIFY is sooner. KEDA and the seed poll on their timer.",
        ),
    ] = engine.NEW_TASK_SEEN_S,
    timer_only: Annotated[
        bool, typer.Option("--timer-only", help="No wake-up on new tasks: the Scaler cycles on its timer alone.")
    ] = False,
) -> None:
    """Simulate a scaling policy on a trace and print billed vs busy GPU time, waits and churn."""
    if policy not in compare.NAMES:
        raise typer.BadParameter(f"{policy!r}: choose one of {', '.join(compare.NAMES)}", param_hint="--policy")
    if config is not None:
        from config.loader import ConfigError, load_settings

        try:
            scaling = load_settings(config).scaling
        except ConfigError as exc:
            typer.echo(f"config error:\n{exc}", err=True)
            raise typer.Exit(2) from None
    else:
        scaling = engine.sim_scaling()
    try:
        tasks = sim_trace.load_trace(trace)
        params = engine.SimParams(
            seed=seed,
            boot=boot,
            spawn_error_rate=spawn_error_rate,
            no_heartbeat_rate=no_heartbeat_rate,
            resume=resume,
            resume_error_rate=resume_error_rate,
            new_task_seen_s=None if timer_only else new_task_seen_s,
        )
        params.boot_sampler()
        params.resume_sampler()
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    names = [policy, compare.ANCHOR, *compare.GAP_REFERENCES, "bound"]
    table = compare.compare(tasks, scaling, params, list(dict.fromkeys(names)))
    figures = table[policy]
    gap = {name: {k: f[k] for k in _GAP_FIGURES if k in f} for name, f in table.items()}
    if plot_to is not None:
        if policy not in baselines.POLICY_NAMES:
            typer.echo(f"--plot: {policy} is a computed reference, not a run; nothing to plot", err=True)
            raise typer.Exit(2)
        plot(
            engine.simulate(tasks, baselines.make_policy(policy), scaling, params),
            plot_to,
            title=f"{trace.stem} / {policy}",
        )
    if as_json:
        typer.echo(
            json.dumps(
                {"trace": str(trace), "seed": seed, "policy": policy, "figures": figures, "comparison": gap}, indent=2
            )
        )
        return
    typer.echo(f"trace {trace} ({len(tasks)} tasks), policy {policy}, seed {seed}")
    for key, label in _LABELS.items():
        typer.echo(f"  {label:<38} {figures[key]}")
    typer.echo(f"  gap closed = ({compare.ANCHOR} - policy) / ({compare.ANCHOR} - reference), in billed/busy:")
    for name, row in gap.items():
        closed = ", ".join(f"{k} {row[k]:.2f}" for k in ("gap_closed", "gap_closed_p95") if k in row)
        typer.echo(f"  {name:<12} billed/busy {row['billed_per_busy']:<6} wait p95 {row['wait_p95_s']:<7} {closed}")
    if plot_to is not None:
        typer.echo(f"  plot written to {plot_to}")
