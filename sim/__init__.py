"""The fleet simulator: the real `fleet` policy and lifecycle on a simulated clock.

One module per job: `trace` loads workload CSVs (also for the demo), `baselines` holds the
policies to compare (ours, the replaced orchestrator's `seed`, KEDA), `engine` runs the
discrete-event simulation, `results` holds what a run produced. It imports nothing of the project
but `fleet` and `config`; `orchestrator simulate` and the benchmarks build on it.
"""

from sim import baselines, engine, results, trace

__all__ = ["baselines", "engine", "results", "trace"]
