"""Who the simulator asks in a round: the expert selectors and the candidate dispatch, both
the real server's (:mod:`fedgrpo.selection`, :func:`fedgrpo.rounds.plan_dispatch`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgrpo.errors import ConfigError
from fedgrpo.rounds import RoundPolicy, experts_to_ask, plan_dispatch
from fedgrpo.selection import CompetenceSelector, RandomSelector
from fedgrpo.sim.config import ClientSpec, WorkloadSpec

__all__ = ["check_experts", "dispatch_round", "select_experts", "split_orders"]


def select_experts(
    domains: Sequence[str],
    clients: Sequence[ClientSpec],
    workload: WorkloadSpec,
    policy: RoundPolicy,
    rng: np.random.Generator,
    available: Sequence[int] | None = None,
) -> list[list[int]]:
    """Ranked experts per question (⌈M·(1+f)⌉ each), drawn from the round's server ``rng``
    by the selectors of :mod:`fedgrpo.selection` (the ones the server uses):

    ``random``: :class:`~fedgrpo.selection.RandomSelector`; ``top``:
    :class:`~fedgrpo.selection.CompetenceSelector` over the clients' given competences."""
    n_ask = experts_to_ask(workload.experts_per_question, policy.over_selection)
    selector: RandomSelector | CompetenceSelector
    if workload.selector == "random":
        selector = RandomSelector(len(clients), M=n_ask)
    else:
        selector = CompetenceSelector(lambda d: [c.competence_on(d) for c in clients], M=n_ask)
    return selector.select(None, domains, rng, available=available)


def check_experts(r: int, experts: Sequence[Sequence[int]], questions: int, n: int) -> None:
    """Round ``r``'s expert lists: one per question, every id a client (0..n-1)."""
    if len(experts) != questions:
        raise ConfigError(f"round {r}: {len(experts)} expert lists for {questions} questions")
    for ex in experts:
        for e in ex:
            if not 0 <= e < n:
                raise ConfigError(f"round {r}: expert {e} is not a client (0..{n - 1})")


def dispatch_round(
    experts: Sequence[Sequence[int]], workload: WorkloadSpec, rng: np.random.Generator
) -> list[dict[int, list[int]]]:
    """Per question: which of its first M experts scores which candidates.

    ``split`` draws one shuffle of the G candidates per question, all in one call (row by
    row it consumes the server stream exactly like successive ``rng.permutation(g)`` calls),
    and deals each with :func:`plan_dispatch` (extras to the best-ranked experts)."""
    g, m = workload.group_size, workload.experts_per_question
    if workload.dispatch == "broadcast":
        return [plan_dispatch(g, ex[:m], "broadcast") for ex in experts]
    orders = split_orders(len(experts), g, rng).tolist()
    return [plan_dispatch(g, ex[:m], "split", order=o) for ex, o in zip(experts, orders)]


def split_orders(questions: int, g: int, rng: np.random.Generator) -> np.ndarray:
    """``[questions, g]``: one shuffle of the candidates per question, in one call."""
    return rng.permuted(np.tile(np.arange(g), (questions, 1)), axis=1)
