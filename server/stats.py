"""Is an accuracy change real? Paired comparison of two evaluations on the same items.

Greedy evaluation is deterministic, so the only noise in "accuracy went from a to b" is which
test items happened to be drawn. Comparing the same items before and after, only the items
that flipped carry information: under "no effect" a flip is equally likely to go either way,
so the number of wrong→right flips among all flips is Binomial(flips, 1/2) (the exact sign
test, a.k.a. McNemar's exact test).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedComparison:
    gained: int  # items wrong before, right after
    lost: int  # items right before, wrong after
    n: int  # items compared
    p_value: float  # one-sided: P(gained >= observed | no effect)

    @property
    def net_accuracy_change(self) -> float:
        return (self.gained - self.lost) / self.n if self.n else 0.0

    def significant(self, alpha: float = 0.05) -> bool:
        return self.gained > self.lost and self.p_value < alpha


def binomial_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2), exact."""
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    return sum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2**trials


def paired_sign_test(before: Sequence[bool], after: Sequence[bool]) -> PairedComparison:
    """Exact one-sided sign test that ``after`` is more often right than ``before``."""
    if len(before) != len(after):
        raise ValueError(
            f"paired comparison needs the same items: {len(before)} before vs {len(after)} "
            "after; evaluate both on the same test items"
        )
    gained = sum(1 for b, a in zip(before, after) if a and not b)
    lost = sum(1 for b, a in zip(before, after) if b and not a)
    return PairedComparison(gained, lost, len(before), binomial_tail(gained, gained + lost))
