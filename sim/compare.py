"""Policies and the clairvoyant references on one trace, side by side, with the gap each closes.

Every comparison the project prints (`orchestrator simulate`, `bench/policy_compare.py`) goes
through `compare`, so each shows, per policy, billed/busy, the p95 wait and the fraction of the
gap between the anchor policy (`ANCHOR`) and a reference that the policy closes:
`(anchor - policy) / (anchor - reference)` in billed/busy, 0 for the anchor itself, 1 for a policy
as cheap as the reference, negative for one dearer than the anchor. The references are those of
`sim.oracle`: `oracle` (the clairvoyant zero-wait plan), `oracle-p95` (a clairvoyant plan
allowed the anchor's p95 wait) and `oracle-warm` (the zero-wait plan that may also park pods in a
warm pool); `bound` is the strict lower bound at the least wait.
"""

from __future__ import annotations

from collections.abc import Sequence

from config.settings import ScalingSettings
from sim import engine, oracle
from sim.baselines import POLICY_NAMES, make_policy
from sim.results import Figures
from sim.trace import TraceTask

__all__ = ["ANCHOR", "GAP_REFERENCES", "NAMES", "compare"]

# The policy whose distance to the references is measured: the default before it learned.
ANCHOR = "previous"
# reference name -> the figure that holds the fraction of the anchor's gap to it that a policy closes
GAP_REFERENCES = {"oracle": "gap_closed", "oracle-p95": "gap_closed_p95", "oracle-warm": "gap_closed_warm"}
NAMES = (*POLICY_NAMES, *oracle.REFERENCE_NAMES)


def compare(
    trace: Sequence[TraceTask], config: ScalingSettings, params: engine.SimParams, names: Sequence[str]
) -> dict[str, Figures]:
    """Figures of each named policy or reference (and of the anchor), each with its gap closed."""
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown policy {unknown[0]!r}: choose one of {', '.join(NAMES)}")
    out: dict[str, Figures] = {}
    for name in dict.fromkeys([ANCHOR, *names]):
        if name in POLICY_NAMES:
            out[name] = dict(engine.simulate(trace, make_policy(name), config, params).figures)
    refs = oracle.reference_figures(trace, config, params, float(out[ANCHOR]["wait_p95_s"]))
    for name in names:
        if name in refs:
            out[name] = dict(refs[name])
    anchor = float(out[ANCHOR]["billed_per_busy"])
    for figures in out.values():
        for ref, key in GAP_REFERENCES.items():
            closed = oracle.gap_closed(anchor, float(figures["billed_per_busy"]), float(refs[ref]["billed_per_busy"]))
            if closed is not None:
                figures[key] = round(closed, 3)
    return {name: out[name] for name in dict.fromkeys([*names, ANCHOR])}
