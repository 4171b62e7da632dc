"""The pure round semantics: plan, deadline, quorum, over-selection, retries, what counts.

One implementation, driven by three clocks (asyncio in ``fedgrpo.server.gathering``, simpy in
``fedgrpo.sim``, wall time in emulate/live); only the waiting differs. No I/O, no clock, no
randomness here: drivers pass time (``time.monotonic()``, ``env.now``) and random generators
in. Imports nothing of ours but the wire protocol's ``ScoreRequest`` and ``fedgrpo.errors``
(enforced in ``make lint``).

Modules: :mod:`~fedgrpo.rounds.policy` (the policy and value checks),
:mod:`~fedgrpo.rounds.plan` (assignments and plans), :mod:`~fedgrpo.rounds.state` (the state
machine of one round), :mod:`~fedgrpo.rounds.outcome` (statuses, reports, the result) and
:mod:`~fedgrpo.rounds.dispatch` (which expert scores which candidates).

Vocabulary
----------
* A **group** is one question with its G candidate completions.
* An **assignment** asks one expert client to score some candidates of one group. Its id is the
  idempotent request id: a retry re-sends the same id.
* ``need[q][c]`` = how many expert answers candidate ``c`` of group ``q`` wants (1 with
  ``split`` dispatch, M with ``broadcast``). The first ``need`` accepted answers per candidate
  count; later ones are *surplus* and ignored.
* **Over-selection** (factor f): ⌈M·(1+f)⌉ experts are asked per question instead of M. The
  extra experts mirror the primaries' candidate shards round-robin. An outstanding assignment
  all of whose candidates are already satisfied is cancelled (:meth:`RoundState.to_cancel`).
* A group with fewer than ``quorum`` rewarded candidates carries **no signal**.

Lifecycle of an assignment::

    pending --on_sent--> in_flight --on_result(valid)--> answered
                            |--on_failure / invalid--> pending (retry) | failed
                            |--not needed any more--> cancelled
                            '--still outstanding at the deadline--> late

Results that arrive after the close, for a cancelled assignment, or twice, are ignored and
recorded (:attr:`RoundOutcome.ignored`); invalid values (wrong length, NaN/inf, out of range)
count as a failure and are never trusted.
"""

from fedgrpo.rounds.dispatch import DISPATCH_MODES, plan_dispatch
from fedgrpo.rounds.outcome import (
    AssignmentLog,
    AssignmentReport,
    AssignmentStatus,
    Disposition,
    Ignored,
    RoundOutcome,
)
from fedgrpo.rounds.plan import Assignment, RoundPlan, build_plan, request_builder
from fedgrpo.rounds.policy import RoundPolicy, experts_to_ask, validate_values
from fedgrpo.rounds.record import RoundStats, round_stats
from fedgrpo.rounds.state import RoundState

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
    "RoundStats",
    "build_plan",
    "experts_to_ask",
    "plan_dispatch",
    "request_builder",
    "round_stats",
    "validate_values",
]
