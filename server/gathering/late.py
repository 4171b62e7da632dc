"""Late rewards in the trainer's layout, shared by the simulated and the real async gatherers.

An async round leaves its stragglers working after the close; what they return later is
handed to the trainer as :class:`~fedgrpo.server.gathering.base.LateReward` s, and what was
still out at the close as an ``outstanding`` mask, both addressed like ``GatherResult.rewards``
(question, candidate, expert slot = position of the client in the round's expert list).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgrpo.rounds import Assignment, AssignmentStatus, RoundOutcome
from fedgrpo.server.gathering.base import LateReward

__all__ = ["late_rewards", "outstanding_slots"]


def outstanding_slots(
    outcome: RoundOutcome, shape: tuple[int, ...], experts: Sequence[Sequence[int]]
) -> np.ndarray:
    """[B, G, E] True where an assignment was still out at the close (status ``late``: its
    reward may still come); slot e = position of the expert in ``experts[b]``."""
    out = np.zeros(shape, dtype=bool)
    for a, st in zip(outcome.plan.assignments, outcome.statuses):
        if st is AssignmentStatus.LATE:
            out[a.group, list(a.candidates), list(experts[a.group]).index(a.client_id)] = True
    return out


def late_rewards(
    round_index: int,
    assignment: Assignment,
    values: Sequence[float],
    experts: Sequence[Sequence[int]],
) -> list[LateReward]:
    """One late result (``assignment`` of round ``round_index``, whose expert lists were
    ``experts``) as one late reward per candidate."""
    a = assignment
    slot = list(experts[a.group]).index(a.client_id)
    return [
        LateReward(round_index, a.group, c, slot, float(v)) for c, v in zip(a.candidates, values)
    ]
