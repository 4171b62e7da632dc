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


@dataclass
class GatherResult:
    rewards: np.ndarray  # [B, G, E], NaN = missing
    stats: RoundStats = field(default_factory=round_stats)  # the one per-round record


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
