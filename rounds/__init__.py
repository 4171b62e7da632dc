"""The pure round semantics: plan, deadline, quorum, over-selection, retries, what counts.

One implementation, driven by three clocks (asyncio in ``fedgrpo.server.gathering``, simpy in
``fedgrpo.sim``, wall time in emulate/live); only the waiting differs. No I/O, no clock, no
randomness here: drivers pass time and random generators in. Imports nothing of ours but the
wire protocol's ``ScoreRequest`` and ``fedgrpo.errors`` (enforced in ``make lint``).
"""

from fedgrpo.rounds.dispatch import DISPATCH_MODES, plan_dispatch
from fedgrpo.rounds.semantics import (
    Assignment,
    AssignmentLog,
    AssignmentReport,
    AssignmentStatus,
    Disposition,
    Ignored,
    RoundOutcome,
    RoundPlan,
    RoundPolicy,
    RoundState,
    build_plan,
    experts_to_ask,
    request_builder,
    validate_values,
)

__all__ = [
    "DISPATCH_MODES",
    "Assignment",
    "AssignmentLog",
    "AssignmentReport",
    "AssignmentStatus",
    "Disposition",
    "Ignored",
    "RoundOutcome",
    "RoundPlan",
    "RoundPolicy",
    "RoundState",
    "build_plan",
    "experts_to_ask",
    "plan_dispatch",
    "request_builder",
    "validate_values",
]
