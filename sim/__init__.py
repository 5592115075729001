"""The fleet simulator: the real `fleet` policy and lifecycle on a simulated clock.

One module per job: `trace` loads workload CSVs (also for the demo), `baselines` holds the
policies to compare (ours, the replaced orchestrator's `seed`, KEDA), `engine` runs the
discrete-event simulation, `results` holds what a run produced, `oracle` computes the clairvoyant
references (what the best possible fleet would pay), `compare` puts policies and references side
by side with the gap each closes. It imports nothing of the project
but `fleet` and `config`; `orchestrator simulate` and the benchmarks build on it.
"""

from sim import baselines, compare, engine, oracle, results, trace

__all__ = ["baselines", "compare", "engine", "oracle", "results", "trace"]
