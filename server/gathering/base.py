"""Where rewards come from, behind one interface the trainer calls once per round.

* :class:`CentralGatherer` — the server scores with ground-truth answers (``central_grpo``,
  the paper's upper bound; no client is involved).
* :class:`DirectGatherer` — calls each expert's scoring function in-process with no clock:
  every expert answers (or raises). The asyncio gatherer (live/emulate) and the simulator
  implement the same protocol with deadlines, dropouts and virtual time.

Rewards come back as ``[B, G, E]`` with NaN where expert slot ``e`` of question ``b`` gave no
reward for candidate ``g`` (not asked, failed, late or offline): missing is never zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedgrpo.edge.answer_format import is_correct
from fedgrpo.edge.protocol import (
    CompetenceRequest,
    ProtocolError,
    RewardResponse,
    ScoreRequest,
    dumps,
    encode_request,
    encode_response,
)
from fedgrpo.rounds.dispatch import plan_dispatch


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
    return {
        "asked": 0,
        "answered": 0,
        "late": 0,
        "failed": 0,
        "offline": 0,
        "cancelled": 0,
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


class DirectGatherer:
    """Experts scored in-process, synchronously, with byte accounting of the real JSON."""

    def __init__(
        self,
        clients: Sequence[ScoreFn],
        dispatch: str = "split",
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        client_labels: Sequence[str] | None = None,
    ) -> None:
        self.clients = list(clients)
        self.dispatch = dispatch
        self.reward_mode = reward_mode
        self.format_weight = format_weight
        self.labels = (
            list(client_labels) if client_labels else [f"client-{k}" for k in range(len(clients))]
        )

    def _call(
        self, client: int, request: ScoreRequest | CompetenceRequest, stats: dict[str, Any]
    ) -> list[float] | None:
        stats["asked"] += 1
        sent = len(dumps(encode_request(request)))
        stats["bytes_sent"] += sent
        try:
            response = self.clients[client](request)
        except (ProtocolError, RuntimeError, ValueError, OSError):
            stats["failed"] += 1
            return None
        values = list(response.values)
        if len(values) != len(request) or not all(
            math.isfinite(v) and 0.0 <= v <= 1.0 for v in values
        ):
            stats["failed"] += 1
            return None
        stats["bytes_received"] += len(dumps(encode_response(response)))
        stats["answered"] += 1
        label = self.labels[client]
        stats["participation"][label] = stats["participation"].get(label, 0) + 1
        return values

    def gather(self, request: GatherRequest, rng: np.random.Generator) -> GatherResult:
        b = len(request.questions)
        g = len(request.candidates[0]) if request.candidates else 0
        e = max((len(x) for x in request.experts), default=0) or 1
        rewards = np.full((b, g, e), np.nan)
        stats = _empty_stats()
        for i, experts in enumerate(request.experts):
            if not experts:
                continue
            plan = plan_dispatch(g, experts, mode=self.dispatch, rng=rng)
            for slot, client in enumerate(experts):
                cand = plan.get(client, [])
                if not cand:
                    continue
                score_request = ScoreRequest(
                    request_id=f"r{request.round_index}-q{i}-c{client}",
                    questions=tuple(request.questions[i] for _ in cand),
                    completions=tuple(request.candidates[i][j] for j in cand),
                    reward_mode=self.reward_mode,
                    format_weight=self.format_weight,
                )
                values = self._call(client, score_request, stats)
                if values is not None:
                    rewards[i, cand, slot] = values
        return GatherResult(rewards, stats)

    def competence(
        self, clients: Sequence[int], questions: Sequence[str], answers: Sequence[str]
    ) -> dict[int, list[float] | None]:
        stats = _empty_stats()
        out: dict[int, list[float] | None] = {}
        for client in clients:
            req = CompetenceRequest(f"competence-c{client}", tuple(questions), tuple(answers))
            out[client] = self._call(client, req, stats)
        return out
