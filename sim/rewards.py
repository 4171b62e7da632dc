"""What the simulator's rounds are about and what clients answer: round inputs and sources,
and reward sources (timing-only surrogate or model-in-the-loop)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, overload

import numpy as np

from fedgrpo.edge.device_rewards import DeviceRewards
from fedgrpo.edge.privacy import BudgetSpent
from fedgrpo.edge.protocol import ScoreRequest
from fedgrpo.errors import ConfigError
from fedgrpo.rounds import Assignment, request_builder
from fedgrpo.sim.config import ClientSpec, SimConfig
from fedgrpo.sim.rng import ClientStream

__all__ = [
    "CompetenceRewards",
    "ModelRewards",
    "QuestionIds",
    "RewardSource",
    "RoundInput",
    "RoundSource",
    "device_scores",
    "surrogate_rounds",
]


@dataclass
class RoundInput:
    """What a round is about. ``candidates`` (texts) are needed by model-in-the-loop rewards;
    ``correct`` ([B, G] latent truth) by the timing-only surrogate; ``experts`` (ranked lists
    per question, ≥ ⌈M·(1+f)⌉ long) overrides the built-in selector."""

    questions: Sequence[str]
    domains: list[str]
    candidates: list[list[str]] | None = None
    correct: np.ndarray | None = None
    experts: list[list[int]] | None = None


RoundSource = Callable[[int, np.random.Generator], RoundInput]


class QuestionIds(Sequence[str]):
    """The abstract questions ``r{round}q{b}`` of a round, made when asked for (a round of
    the scale studies has 25k of them and nothing reads them but ``len``)."""

    __slots__ = ("_n", "_r")

    def __init__(self, round_index: int, n: int) -> None:
        self._r, self._n = round_index, n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [f"r{self._r}q{b}" for b in range(self._n)[i]]
        b = range(self._n)[i]  # IndexError past the end, negative from the end
        return f"r{self._r}q{b}"


def surrogate_rounds(config: SimConfig) -> RoundSource:
    """Abstract questions: a uniform domain each, candidates correct with ``policy_accuracy``."""
    w = config.workload

    def source(r: int, rng: np.random.Generator) -> RoundInput:
        doms = rng.integers(0, len(w.domains), size=w.questions_per_round).tolist()
        domains = [w.domains[d] for d in doms]
        correct = rng.random((w.questions_per_round, w.group_size)) < w.policy_accuracy
        return RoundInput(QuestionIds(r, len(domains)), domains, None, correct)

    return source


class RewardSource(Protocol):
    """Values a client returns for an assignment (called at the virtual time it finishes)."""

    def __call__(
        self, client_id: int, assignment: Assignment, round_input: RoundInput, stream: ClientStream
    ) -> Sequence[float]: ...


class CompetenceRewards:
    """Timing-only surrogate: the client judges each candidate right with probability
    ``competence[client][domain]`` (1 if the latent candidate is correct, else 0; flipped when
    the judgement is wrong). Draws come from the client's own ``reward`` stream."""

    def __init__(self, clients: Sequence[ClientSpec]) -> None:
        self._comp = [c.competence for c in clients]
        # per-client constant competence as a float (None: per-domain mapping)
        self._flat = [None if isinstance(c, Mapping) else float(c) for c in self._comp]
        # the latent truth of recent round inputs as Python lists (async stragglers score
        # earlier rounds' inputs): [(input, rows)], most recent first
        self._cache: list[tuple[RoundInput, list[list[bool]] | None]] = []

    def __call__(
        self, client_id: int, assignment: Assignment, round_input: RoundInput, stream: ClientStream
    ) -> list[float]:
        p = self._flat[client_id]
        if p is None:
            comp = self._comp[client_id]
            assert isinstance(comp, Mapping)
            p = float(comp.get(round_input.domains[assignment.group], 0.5))
        rows = self._truth_rows(round_input)
        cands = assignment.candidates
        us = stream.uniforms(len(cands))  # one draw per candidate, in order
        if rows is None:
            return [1.0 if u < p else 0.0 for u in us]
        row = rows[assignment.group]
        return [1.0 if row[c] == (u < p) else 0.0 for c, u in zip(cands, us)]

    def _truth_rows(self, inp: RoundInput) -> list[list[bool]] | None:
        cache = self._cache
        if cache and cache[0][0] is inp:
            return cache[0][1]
        for k, (seen, rows) in enumerate(cache):
            if seen is inp:
                cache.insert(0, cache.pop(k))
                return rows
        truth = inp.correct
        rows = None if truth is None else np.asarray(truth, dtype=bool).tolist()
        cache.insert(0, (inp, rows))
        del cache[8:]
        return rows


class ModelRewards:
    """Model-in-the-loop: ``reward_fn(client_id, request) -> values`` computes real rewards
    (e.g. an in-process ONNX scorer); time stays virtual. Needs candidate texts.

    ``devices[k]`` (optional) is client k's device side (:mod:`fedgrpo.edge.device_rewards`:
    its behaviour, then local DP), the same code the edge service runs, drawing from the
    client's ``(seed, round, client, "reward")`` stream. A device whose privacy budget is
    spent sends nothing (an empty answer: the round counts it invalid, as a refusal)."""

    def __init__(
        self,
        reward_fn: Callable[[int, ScoreRequest], Sequence[float]],
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        devices: Sequence[DeviceRewards] | None = None,
    ) -> None:
        self.reward_fn = reward_fn
        self.reward_mode, self.format_weight = reward_mode, format_weight
        self.devices = [d if d.active else None for d in devices] if devices else None

    def request(self, assignment: Assignment, round_input: RoundInput) -> ScoreRequest:
        if round_input.candidates is None:
            raise ConfigError(
                "model-in-the-loop rewards need candidate texts; the round source must fill "
                "RoundInput.candidates"
            )
        build = request_builder(
            round_input.questions, round_input.candidates, self.reward_mode, self.format_weight
        )
        return build(assignment)

    def __call__(
        self, client_id: int, assignment: Assignment, round_input: RoundInput, stream: ClientStream
    ) -> Sequence[float]:
        request = self.request(assignment, round_input)
        device = self.devices[client_id] if self.devices is not None else None
        return device_scores(self.reward_fn, client_id, request, device, stream)


def device_scores(
    reward_fn: Callable[[int, ScoreRequest], Sequence[float]],
    client_id: int,
    request: ScoreRequest,
    device: DeviceRewards | None,
    stream: ClientStream,
) -> Sequence[float]:
    """What simulated client ``client_id`` sends for ``request``: its honest scores, through
    its ``device`` side (behaviour, then local DP; None = honest and in the clear). Empty when
    the device's privacy budget does not cover the request (nothing is charged then)."""
    if device is None:
        return reward_fn(client_id, request)
    try:
        device.admit(len(request))
    except BudgetSpent:
        return []
    return device.apply(request.questions, reward_fn(client_id, request), stream)
