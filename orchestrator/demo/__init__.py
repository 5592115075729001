"""`orchestrator demo` (what `make demo` runs): the whole system on one machine, in about two minutes.

An embedded Postgres in `.orchestrator/pgdata`, a local Ray head started for the demo (dashboard
on), the Scaler and LogShipper actors, LocalProvider pods running the reference worker, and a
workload replayed from a trace CSV with time compressed so it ends in about `--duration` seconds.
A live view shows tasks, workers, the last decision and LogShipper health while it runs; a
summary follows. The database stays in `.orchestrator/` for `orchestrator explain` and `status`;
every process the demo started (Ray, actors, pods, Postgres) is stopped, also on Ctrl-C.

Trace time is compressed by `--speed` (default: fit the trace into `--duration`): task durations
and gaps between arrivals shrink, and so do the policy's time knobs (idle timeout, scale-down
stabilization, drain timeout: their production defaults divided by the speed, with floors of a
few Scaler cycles). Pod boot time does not shrink (it is real, about 5-10 s here), and the policy
keeps an idle worker at least one measured boot time while work keeps arriving (the ski-rental
rule), so a trace only shows the fleet going back down if its quiet gaps, compressed, are longer
than about two boot times. The default trace, `bench/traces/demo.csv`, is made for that: three
bursts (6, 2 and 6 tasks) with quiet gaps, so in two minutes the fleet goes up to 4, down to 0, up
to 2, down, up to 4 and down. `bursty.csv` (a six-hour day) compressed into two minutes has gaps of
about 9 s, under two boot times, so there the fleet rightly stays up until the end.

One module per job: `compression` (trace time to demo time, and the demo's settings), `runtime`
(Postgres, Ray and the actors: started, then stopped in order), `replay` (the trace inserted as
tasks on the compressed clock), `view` (what the live view shows, and the watch loop), `summary`
(the figures of the run) and `cli` (the command, its signals and its final words). Traces are read
by `sim.trace`, the simulator's strict loader.
"""

from __future__ import annotations

from orchestrator.demo.cli import command

__all__ = ["command"]
