"""The pure fleet domain: models, the pod lifecycle state machine, the scaling policy, baselines.

Nothing here does I/O, touches Ray or reads a clock; `now` is always an argument. It imports
nothing of the project but `config`, so a policy test needs no database, no Ray and no network.
"""

from fleet import baselines, lifecycle, models, policy

__all__ = ["baselines", "lifecycle", "models", "policy"]
