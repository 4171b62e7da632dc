"""Where rewards come from, behind one interface the trainer calls once per round.

* :class:`CentralGatherer` — the server scores with ground-truth answers (``central_grpo``,
  the paper's upper bound; no client is involved).
* :class:`~fedgrpo.server.gathering.inprocess.DirectGatherer` — each expert's scoring
  function called in-process, through the same round semantics and asyncio driver as emulate
  and live (:mod:`.asynchronous`); the simulator implements the protocol in virtual time.

Rewards come back as ``[B, G, E]`` with NaN where expert slot ``e`` of question ``b`` gave no
reward for candidate ``g`` (not asked, failed, late or offline): missing is never zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedgrpo.edge.answer_format import is_correct
from fedgrpo.edge.protocol import (
    CompetenceRequest,
    RewardResponse,
    ScoreRequest,
)
from fedgrpo.rounds.record import RoundStats, round_stats


@dataclass
class GatherRequest:
    round_index: int
    questions: list[str]
    candidates: list[list[str]]  # [B][G]
    experts: list[list[int]]  # [B][<=M] client indices
    domains: list[str]  # true domains: only oracle selection and timing surrogates read them
    answers: list[str]  # ground truth: only the central baseline reads them


@dataclass(frozen=True)
class LateReward:
    """A reward that arrived after its round closed (async rounds): expert slot ``slot`` of
    question ``question`` of round ``round_index`` scored candidate ``candidate``."""

    round_index: int
    question: int
    candidate: int
    slot: int
    value: float


@dataclass
class GatherResult:
    rewards: np.ndarray  # [B, G, E], NaN = missing
    stats: RoundStats = field(default_factory=round_stats)  # the one per-round record
    # async rounds: [B, G, E] True where a reward may still arrive after the close (None = none)
    outstanding: np.ndarray | None = None
    # async rounds: rewards for earlier rounds' candidates that arrived during this round
    late: list[LateReward] = field(default_factory=list)


def idle_clients(
    available: Sequence[int] | None, busy: set[int], num_clients: int
) -> Sequence[int] | None:
    """The clients to select from in an async round: ``available`` (None = all
    ``num_clients``) without those still busy with an earlier round's straggler, so that a
    new request never queues behind an old one; all of ``available`` if none is idle."""
    if not busy:
        return available
    pool = range(num_clients) if available is None else available
    idle = [k for k in pool if k not in busy]
    return idle if idle else available


class RewardGatherer(Protocol):
    def gather(self, request: GatherRequest, rng: np.random.Generator) -> GatherResult: ...

    def competence(
        self, clients: Sequence[int], questions: Sequence[str], answers: Sequence[str]
    ) -> dict[int, list[float] | None]: ...


ScoreFn = Callable[[ScoreRequest | CompetenceRequest], RewardResponse]


class CentralGatherer:
    """Ground-truth rewards computed by the server itself (upper-bound baseline), with the
    task's checker (default: the shared answer format's)."""

    def __init__(self, is_correct: Callable[[str, str], bool] = is_correct) -> None:
        self.is_correct = is_correct

    def gather(self, request: GatherRequest, rng: np.random.Generator) -> GatherResult:
        b, g = len(request.questions), len(request.candidates[0]) if request.candidates else 0
        rewards = np.full((b, g, 1), np.nan)
        for i, (cands, answer) in enumerate(zip(request.candidates, request.answers)):
            for j, text in enumerate(cands):
                rewards[i, j, 0] = float(self.is_correct(text, answer))
        return GatherResult(rewards, round_stats())  # no client was involved

    def competence(
        self, clients: Sequence[int], questions: Sequence[str], answers: Sequence[str]
    ) -> dict[int, list[float] | None]:
        return {}
