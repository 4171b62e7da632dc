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
from typing import Any, Protocol

import numpy as np

from fedgrpo.edge.answer_format import is_correct
from fedgrpo.edge.protocol import (
    CompetenceRequest,
    RewardResponse,
    ScoreRequest,
)


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
    stats: dict[str, Any] = field(default_factory=dict)


class RewardGatherer(Protocol):
    def gather(self, request: GatherRequest, rng: np.random.Generator) -> GatherResult: ...

    def competence(
        self, clients: Sequence[int], questions: Sequence[str], answers: Sequence[str]
    ) -> dict[int, list[float] | None]: ...


ScoreFn = Callable[[ScoreRequest | CompetenceRequest], RewardResponse]


def _empty_stats() -> dict[str, Any]:
    """A round in which no client was involved (the same keys as every gatherer's)."""
    return {
        "asked": 0,
        "answered": 0,
        "failed": 0,
        "cancelled": 0,
        "late": 0,
        "retried": 0,
        "retries": 0,
        "ignored": 0,
        "offline": 0,
        "crashed": 0,
        "bytes_sent": 0,
        "bytes_received": 0,
        "duration_s": 0.0,
        "wasted_device_s": 0.0,
        "participation": {},
    }


class CentralGatherer:
    """Ground-truth rewards computed by the server itself (upper-bound baseline)."""

    def gather(self, request: GatherRequest, rng: np.random.Generator) -> GatherResult:
        b, g = len(request.questions), len(request.candidates[0]) if request.candidates else 0
        rewards = np.full((b, g, 1), np.nan)
        for i, (cands, answer) in enumerate(zip(request.candidates, request.answers)):
            for j, text in enumerate(cands):
                rewards[i, j, 0] = float(is_correct(text, answer))
        return GatherResult(rewards, _empty_stats())

    def competence(
        self, clients: Sequence[int], questions: Sequence[str], answers: Sequence[str]
    ) -> dict[int, list[float] | None]:
        return {}
