"""The round policy (how long to wait, how much is enough, how hard to try) and the checks
every driver shares: how many experts to ask per question, and whether reported values can be
trusted."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedgrpo.errors import ConfigError

__all__ = ["RoundPolicy", "experts_to_ask", "validate_values"]


@dataclass(frozen=True)
class RoundPolicy:
    """How long to wait, how much is enough, how hard to try.

    * ``deadline_s``: the round closes this many seconds after it starts.
    * ``quorum``: minimum rewarded candidates for a group to carry signal (SPEC: 2).
    * ``round_quorum``: if set, the round closes early as soon as this fraction of groups has
      reached ``quorum`` (outstanding work is cancelled).
    * ``over_selection``: extra experts asked per question on top of its M primaries (a
      count, as in the scenario file: M + over_selection are asked).
    * ``max_retries``: re-sends per assignment after a failure; a retry happens only if more than
      ``retry_backoff_s + retry_min_remaining_s`` remain before the deadline.
    * ``retry_invalid``: also retry after an invalid result (off by default: a device that sent
      NaN once will likely do it again).
    * ``close_early``: close as soon as every assignment is resolved instead of at the deadline.
    * ``reward_range``: inclusive [lo, hi] a reward must lie in to be trusted.
    """

    deadline_s: float = 30.0
    quorum: int = 2
    round_quorum: float | None = None
    over_selection: int = 0
    max_retries: int = 0
    retry_backoff_s: float = 0.0
    retry_min_remaining_s: float = 0.0
    retry_invalid: bool = False
    close_early: bool = True
    reward_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        def bad(name: str, value: object, allowed: str) -> ConfigError:
            return ConfigError(f"RoundPolicy.{name}={value!r} is invalid; allowed: {allowed}")

        if not (isinstance(self.deadline_s, (int, float)) and math.isfinite(self.deadline_s)):
            raise bad("deadline_s", self.deadline_s, "a finite number of seconds >= 0")
        if self.deadline_s < 0:
            raise bad("deadline_s", self.deadline_s, "a finite number of seconds >= 0")
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) or self.quorum < 1:
            raise bad("quorum", self.quorum, "an integer >= 1 (rewarded candidates per group)")
        if self.round_quorum is not None and not (0.0 < self.round_quorum <= 1.0):
            raise bad("round_quorum", self.round_quorum, "None or a fraction in (0, 1]")
        if (
            isinstance(self.over_selection, bool)
            or not isinstance(self.over_selection, int)
            or self.over_selection < 0
        ):
            raise bad(
                "over_selection", self.over_selection, "an integer >= 0 (extra experts per question)"
            )
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise bad("max_retries", self.max_retries, "an integer >= 0")
        for name in ("retry_backoff_s", "retry_min_remaining_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(name, value, "a finite number of seconds >= 0")
        lo, hi = self.reward_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise bad("reward_range", self.reward_range, "finite (lo, hi) with lo <= hi")


def experts_to_ask(m: int, over_selection: int) -> int:
    """M primaries plus ``over_selection`` extras."""
    if m < 0:
        raise ConfigError(f"experts per question M={m}; allowed >= 0")
    return m + over_selection


def validate_values(
    values: Sequence[object], expected_len: int, reward_range: tuple[float, float]
) -> str | None:
    """None if ``values`` can be trusted, else why not."""
    if len(values) != expected_len:
        return f"expected {expected_len} values, got {len(values)}"
    lo, hi = reward_range
    if math.isfinite(lo) and math.isfinite(hi):
        # fast path: plain floats inside a finite range are finite numbers in range
        for v in values:
            if type(v) is not float or not lo <= v <= hi:
                break
        else:
            return None
    for j, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            return f"value[{j}]={v!r} is not a number"
        if not math.isfinite(v):
            return f"value[{j}]={v!r} is not finite"
        if not lo <= v <= hi:
            return f"value[{j}]={v!r} is outside the reward range [{lo}, {hi}]"
    return None
