"""The device's last step before a reward leaves it: its behaviour (honest or Byzantine,
:mod:`fedgrpo.edge.behaviour`), then local differential privacy with per-device accounting
(:mod:`fedgrpo.edge.privacy`).

One :class:`DeviceRewards` per device. The edge service holds one (``fedgrpo-edge serve
--behaviour ... --privacy ...``, see :func:`add_arguments`) and the simulator one per
simulated client (``sim/rewards.py``), so every mode runs this same code. A release that the
privacy budget does not cover raises :class:`~fedgrpo.edge.privacy.BudgetSpent` *before*
the device scores (:meth:`DeviceRewards.admit`).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedgrpo.edge.behaviour import BEHAVIOURS, Behaviour, Draws
from fedgrpo.edge.privacy import MECHANISMS, PrivacyAccountant, PrivacySpec, privatise

__all__ = [
    "DeviceRewards",
    "DeviceScorer",
    "GeneratorDraws",
    "add_arguments",
    "admit",
    "from_arguments",
]


class GeneratorDraws:
    """:class:`~fedgrpo.edge.behaviour.Draws` from a numpy generator (the edge service's)."""

    def __init__(self, seed: int | None) -> None:
        self._gen = np.random.default_rng(seed)

    def uniforms(self, k: int) -> list[float]:
        return [float(x) for x in self._gen.random(k)]

    def normals(self, k: int) -> list[float]:
        return [float(x) for x in self._gen.standard_normal(k)]


class DeviceRewards:
    def __init__(self, behaviour: Behaviour | None = None, privacy: PrivacySpec | None = None):
        self.behaviour = behaviour or Behaviour()
        self.privacy = privacy or PrivacySpec()
        self.accountant = PrivacyAccountant(self.privacy)

    @property
    def active(self) -> bool:
        return not self.behaviour.honest or self.privacy.on

    def admit(self, k: int) -> None:
        """Charge ``k`` releases to the budget, or raise ``BudgetSpent`` (nothing charged)."""
        self.accountant.charge(k)

    def apply(self, questions: Sequence[str], values: Sequence[float], draws: Draws) -> list[float]:
        """Behaviour, then privacy (already admitted): what the device sends."""
        out = self.behaviour.apply(questions, values, draws)
        return privatise(out, self.privacy, draws)

    def parameters(self) -> tuple[tuple[str, str], ...]:
        """What the device advertises in its model metadata (the server debiases with it)."""
        if not self.privacy.on:
            return ()
        p = self.privacy
        return (("privacy_mechanism", p.mechanism), ("privacy_epsilon", f"{p.epsilon:g}"),
                ("privacy_delta", f"{p.delta:g}"))  # fmt: skip


class DeviceScorer:
    """A scorer (``edge.service_config.RewardModel``) whose scores pass through the device's
    :class:`DeviceRewards`; competence answers stay honest. Thread-safe (the service scores
    in a pool)."""

    def __init__(self, inner: Any, device: DeviceRewards, draws: Draws) -> None:
        self.inner, self.device, self.draws = inner, device, draws
        self.name = inner.name
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # config, model_dir, ... of the real scorer
        return getattr(self.inner, name)

    def score(
        self,
        questions: Sequence[str],
        completions: Sequence[str],
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        partial_credit: float = 0.0,
    ) -> list[float]:
        values = self.inner.score(questions, completions, reward_mode, format_weight, partial_credit)
        with self._lock:
            return self.device.apply(questions, values, self.draws)

    def competence(self, questions: Sequence[str], reference_answers: Sequence[str]) -> list[float]:
        return list(self.inner.competence(questions, reference_answers))


def admit(scorer: Any, k: int) -> None:
    """Before scoring ``k`` rewards: charge them to the device's privacy budget, or raise
    :class:`~fedgrpo.edge.privacy.BudgetSpent` (no-op for a plain scorer)."""
    if isinstance(scorer, DeviceScorer):
        with scorer._lock:
            scorer.device.admit(k)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``fedgrpo-edge serve`` flags for the device's behaviour and privacy."""
    g = parser.add_argument_group("behaviour and privacy of the rewards this device sends")
    g.add_argument(
        "--behaviour",
        choices=BEHAVIOURS,
        default="honest",
        help="a Byzantine behaviour for robustness studies (default honest)",
    )
    g.add_argument(
        "--behaviour-target",
        default=None,
        metavar="REGEX",
        help="colluding: the questions attacked (a regex on the question text)",
    )
    g.add_argument(
        "--behaviour-strength",
        type=float,
        default=0.2,
        metavar="P",
        help="small_shift: probability of inverting a reward (default 0.2)",
    )
    g.add_argument(
        "--privacy",
        choices=MECHANISMS,
        default="none",
        help="local differential privacy of each reward (default none)",
    )
    g.add_argument("--epsilon", type=float, default=1.0, help="privacy: epsilon per reward")
    g.add_argument(
        "--delta",
        type=float,
        default=1e-5,
        help="privacy: delta (gaussian per reward; the accountant's target delta)",
    )
    g.add_argument(
        "--privacy-budget",
        type=float,
        default=None,
        metavar="EPS",
        help="total epsilon this device spends; then it refuses with 403",
    )
    g.add_argument("--noise-seed", type=int, default=None,
                   help="seed of the behaviour/privacy draws (default: fresh OS entropy)")  # fmt: skip


def from_arguments(args: Any) -> tuple[DeviceRewards, GeneratorDraws]:
    """The device's :class:`DeviceRewards` and its draws from parsed ``serve`` flags."""
    behaviour = Behaviour(args.behaviour, args.behaviour_target, args.behaviour_strength)
    privacy = PrivacySpec(args.privacy, args.epsilon, args.delta, args.privacy_budget)
    return DeviceRewards(behaviour, privacy), GeneratorDraws(args.noise_seed)
