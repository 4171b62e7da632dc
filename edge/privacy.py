"""Local differential privacy of rewards, applied on the device before a reward leaves it.

Mechanisms (each released reward is one ε-LDP, or (ε, δ)-LDP, release about the device's
private data; a reward lies in [0, 1], so its sensitivity is 1):

* ``randomised_response``: the reward ``r`` is first rounded to a bit (1 with probability
  ``r``: exact for binary rewards, unbiased for the others), then kept with probability
  ``e^ε / (1 + e^ε)`` and flipped otherwise. The device sends 0 or 1.
* ``laplace``: ``r + Laplace(1/ε)``.
* ``gaussian``: ``r + N(0, σ²)`` with the smallest σ that makes one release (ε, δ)-DP
  (the analytic Gaussian mechanism, :func:`gaussian_sigma`).

:func:`debias` is the server's unbiased estimate of the honest reward from one released
value (randomised response: ``(y - p) / (1 - 2p)`` with ``p`` the flip probability; the
additive mechanisms are already unbiased). Laplace and Gaussian values are unbounded, so a
private reward may lie outside [0, 1]; :func:`reward_range` is the range the server accepts
(50 noise scales either side: a Laplace value falls outside it with probability e^-50).

:class:`PrivacyAccountant` composes a device's releases across rounds with Google's
``dp-accounting`` (Rényi DP, replace-one neighbours, converted to (ε, δ) at the target δ) and
refuses a release that would spend more than the budget (:class:`BudgetSpent`; the edge
service answers 403). Draws are passed in, as for :mod:`fedgrpo.edge.behaviour`: ``2k``
uniforms (randomised response), ``k`` uniforms (Laplace) or ``k`` normals (Gaussian) per
release of ``k`` rewards.

``dp-accounting`` (the ``edge`` extra) is imported lazily, only when a mechanism is on; it
brings numpy and scipy, never torch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedgrpo.edge.behaviour import Draws

__all__ = [
    "MECHANISMS",
    "BudgetSpent",
    "PrivacyAccountant",
    "PrivacySpec",
    "debias",
    "privatise",
    "reward_range",
]

MECHANISMS = ("none", "randomised_response", "laplace", "gaussian")
RANGE_SCALES = 50.0  # accepted reward range: this many noise scales beyond [0, 1]


class BudgetSpent(Exception):
    """The device's privacy budget does not cover this release."""


@dataclass(frozen=True)
class PrivacySpec:
    """``epsilon`` (and, for ``gaussian``, ``delta``) per released reward; ``budget`` = the
    total ε a device may spend at ``delta`` over all its releases (None = unlimited, still
    accounted)."""

    mechanism: str = "none"
    epsilon: float = 1.0
    delta: float = 1e-5
    budget: float | None = None

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(
                f"privacy mechanism {self.mechanism!r} is unknown; use one of "
                f"{', '.join(MECHANISMS)}"
            )
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"privacy epsilon must be a finite number > 0, got {self.epsilon!r}")
        if not 0.0 < self.delta < 1.0:
            raise ValueError(f"privacy delta must be in (0, 1), got {self.delta!r}")
        if self.budget is not None and not self.budget > 0:
            raise ValueError(f"privacy budget must be > 0 (or none), got {self.budget!r}")

    @property
    def on(self) -> bool:
        return self.mechanism != "none"

    @property
    def flip_probability(self) -> float:
        """Randomised response: probability that the sent bit is the other one."""
        return 1.0 / (1.0 + math.exp(self.epsilon))

    @property
    def scale(self) -> float:
        """Noise scale: Laplace b = 1/ε, Gaussian σ (calibrated), 0 otherwise."""
        if self.mechanism == "laplace":
            return 1.0 / self.epsilon
        if self.mechanism == "gaussian":
            return gaussian_sigma(self.epsilon, self.delta)
        return 0.0


@functools.lru_cache(maxsize=64)
def gaussian_sigma(epsilon: float, delta: float) -> float:
    """The smallest σ for which one sensitivity-1 Gaussian release is (ε, δ)-DP: the exact
    condition of the analytic Gaussian mechanism (Balle & Wang 2018),
    ``Φ(1/2σ − εσ) − e^ε Φ(−1/2σ − εσ) <= δ``, solved by bisection."""

    def phi(x: float) -> float:
        return 0.5 * math.erfc(-x / math.sqrt(2.0))

    def delta_of(sigma: float) -> float:
        a, b = 1.0 / (2.0 * sigma), epsilon * sigma
        return phi(a - b) - math.exp(epsilon) * phi(-a - b)

    lo, hi = 1e-4, 1.0
    while delta_of(hi) > delta:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if delta_of(mid) <= delta else (mid, hi)
    return hi


def _fresh_accountant() -> Any:
    from dp_accounting import NeighboringRelation
    from dp_accounting.rdp import RdpAccountant

    return RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE)


def _event(spec: PrivacySpec) -> Any:
    from dp_accounting import GaussianDpEvent, LaplaceDpEvent, RandomizedResponseDpEvent

    if spec.mechanism == "randomised_response":
        # dp-accounting's noise parameter: the probability of answering a uniform bucket
        return RandomizedResponseDpEvent(2.0 * spec.flip_probability, 2)
    if spec.mechanism == "laplace":
        return LaplaceDpEvent(spec.scale)
    return GaussianDpEvent(spec.scale)


def privatise(values: Sequence[float], spec: PrivacySpec, draws: Draws) -> list[float]:
    """The released values (pure given the draws)."""
    r = [float(v) for v in values]
    if not spec.on or not r:
        return r
    k = len(r)
    if spec.mechanism == "randomised_response":
        p = spec.flip_probability
        us = draws.uniforms(2 * k)
        bits = [1.0 if us[i] < min(max(v, 0.0), 1.0) else 0.0 for i, v in enumerate(r)]
        return [1.0 - b if us[k + i] < p else b for i, b in enumerate(bits)]
    if spec.mechanism == "laplace":
        b = spec.scale
        out = []
        for v, u in zip(r, draws.uniforms(k)):
            w = u - 0.5  # inverse CDF of Laplace(0, b) at u
            out.append(v - b * math.copysign(1.0, w) * math.log1p(-2.0 * abs(w)))
        return out
    sigma = spec.scale
    return [v + sigma * z for v, z in zip(r, draws.normals(k))]


def debias(values: Any, spec: PrivacySpec) -> Any:
    """Unbiased estimate of the honest reward from released ``values`` (floats or a numpy
    array; NaN stays NaN)."""
    if spec.mechanism != "randomised_response":
        return values
    p = spec.flip_probability
    return (values - p) / (1.0 - 2.0 * p)


def reward_range(spec: PrivacySpec) -> tuple[float, float]:
    """The values a device with this mechanism may send."""
    margin = RANGE_SCALES * spec.scale
    return (-margin, 1.0 + margin)


@functools.lru_cache(maxsize=64)
def _rdp_of_one(spec: PrivacySpec) -> tuple[Any, Any]:
    """(orders, RDP curve) of one release, from dp-accounting's Rényi-DP accountant."""
    acc = _fresh_accountant()
    acc.compose(_event(spec), 1)
    return acc.orders, acc.rdp


class PrivacyAccountant:
    """One device's (ε, δ) spent over all its releases so far: Rényi DP composes additively
    (``releases × one release's curve``, from dp-accounting), converted to ε at
    ``spec.delta`` by dp-accounting's ``compute_epsilon``."""

    def __init__(self, spec: PrivacySpec) -> None:
        self.spec = spec
        self.released = 0

    def epsilon(self, extra: int = 0) -> float:
        """ε spent at ``spec.delta`` (after ``extra`` more releases, if given)."""
        n = self.released + extra
        if not self.spec.on or n == 0:
            return 0.0
        from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

        orders, rdp = _rdp_of_one(self.spec)
        return float(compute_epsilon(orders, n * rdp, self.spec.delta)[0])

    def charge(self, k: int) -> None:
        """Account ``k`` releases, or raise :class:`BudgetSpent` (nothing charged) when they
        would take ε past the budget."""
        if not self.spec.on or k <= 0:
            return
        budget = self.spec.budget
        if budget is not None:
            after = self.epsilon(k)
            if after > budget:
                raise BudgetSpent(
                    f"privacy budget spent: {k} more reward(s) would bring epsilon to "
                    f"{after:.3g} (delta {self.spec.delta:g}) past the budget {budget:g}; "
                    f"{self.released} reward(s) released, epsilon {self.epsilon():.3g}. "
                    "This device answers no more score requests"
                )
        self.released += k

    def report(self) -> dict[str, Any]:
        return {
            "mechanism": self.spec.mechanism,
            "released": self.released,
            "epsilon": self.epsilon(),
            "delta": self.spec.delta,
            "budget": self.spec.budget,
        }
