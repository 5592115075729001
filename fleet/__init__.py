"""The pure fleet domain: models, the pod lifecycle state machine, the scaling policy, the Scaler's rules.

Nothing here does I/O, touches Ray or reads a clock; `now` is always an argument. It imports
nothing of the project but `config`, so a policy test needs no database, no Ray and no network.
The baseline policies and the simulator that runs them live in `sim`.
"""

from fleet import lifecycle, models, policy

__all__ = ["lifecycle", "models", "policy"]
