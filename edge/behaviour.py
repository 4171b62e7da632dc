"""What a device does to its honest rewards before they leave it: honest or one of the
Byzantine behaviours studied in ``benchmarks/robustness.py``.

The one implementation, applied on the device side in every mode: the edge service applies
it in its scoring path (``fedgrpo-edge serve --behaviour ...``, what emulate starts and what a
live-test device runs), and the simulator's in-process devices call the same
:meth:`Behaviour.apply` (``sim/rewards.py``). Only score requests are affected: competence
answers on the auxiliary set stay honest (an attacker that wants to be selected as an expert
answers the public test well, then lies where it cannot be checked).

Randomness is passed in (``draws.uniforms(k)``): the simulator passes the client's
``(seed, round, client, "reward")`` stream (``sim/rng.py``); the edge service its own seeded
generator. Every behaviour takes exactly ``len(values)`` uniforms, so the streams stay aligned
whatever the behaviour.

Behaviours (``r`` = the honest reward in [0, 1], ``u`` a uniform draw):

* ``honest``: ``r``;
* ``random``: ``u`` (no information about the candidate);
* ``inverted``: ``1 - r`` (rewards the wrong answers);
* ``always_approve``: ``1`` (a lazy device that never judges);
* ``colluding``: ``1 - r`` on questions matching ``target`` (a regular expression on the
  question text, e.g. ``\\+`` for the ``add`` domain), honest elsewhere: every colluder lies
  in the same direction on one domain and builds trust on the others;
* ``small_shift``: ``1 - r`` with probability ``strength`` (default 0.2), else ``r``: a
  device that is wrong a little more often than an honest weak judge, inside the spread of
  honest disagreement, so no single round gives it away.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BEHAVIOURS", "Behaviour", "Draws"]

BEHAVIOURS = ("honest", "random", "inverted", "always_approve", "colluding", "small_shift")


class Draws(Protocol):
    """Where a device's random numbers come from (``sim.rng.ClientStream`` is one)."""

    def uniforms(self, k: int) -> list[float]: ...

    def normals(self, k: int) -> list[float]: ...


@dataclass(frozen=True)
class Behaviour:
    kind: str = "honest"
    # colluding: regular expression (re.search) selecting the attacked questions
    target: str | None = None
    # small_shift: probability of inverting a reward
    strength: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in BEHAVIOURS:
            raise ValueError(
                f"behaviour {self.kind!r} is unknown; use one of {', '.join(BEHAVIOURS)}"
            )
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"behaviour strength must be in [0, 1], got {self.strength!r}")
        if self.kind == "colluding" and not self.target:
            raise ValueError("behaviour 'colluding' needs a target (a regex on the question text)")
        if self.target is not None:
            try:
                re.compile(self.target)
            except re.error as exc:
                raise ValueError(
                    f"behaviour target {self.target!r} is not a regex: {exc}"
                ) from None

    @property
    def honest(self) -> bool:
        return self.kind == "honest"

    def apply(self, questions: Sequence[str], values: Sequence[float], draws: Draws) -> list[float]:
        """The values this device sends instead of the honest ``values`` (one per question)."""
        us = draws.uniforms(len(values)) if values else []
        r = [float(v) for v in values]
        kind = self.kind
        if kind == "honest":
            return r
        if kind == "random":
            return list(us)
        if kind == "inverted":
            return [1.0 - v for v in r]
        if kind == "always_approve":
            return [1.0] * len(r)
        if kind == "colluding":
            pattern = re.compile(self.target or "")
            return [1.0 - v if pattern.search(q) else v for q, v in zip(questions, r)]
        # small_shift
        return [1.0 - v if u < self.strength else v for v, u in zip(r, us)]
