from __future__ import annotations

import math

import pytest

from fedgrpo.server.stats import binomial_tail, paired_sign_test


def test_binomial_tail_exact_values() -> None:
    assert binomial_tail(0, 10) == 1.0
    assert binomial_tail(11, 10) == 0.0
    assert binomial_tail(10, 10) == pytest.approx(1 / 1024)
    assert binomial_tail(8, 10) == pytest.approx((45 + 10 + 1) / 1024)
    # symmetric: P(X >= 3) + P(X <= 2) = 1 for n = 5
    assert binomial_tail(3, 5) == pytest.approx(0.5)


def test_only_flipped_items_count() -> None:
    before = [True] * 50 + [False] * 50
    after = [True] * 50 + [False] * 50
    cmp = paired_sign_test(before, after)
    assert (cmp.gained, cmp.lost, cmp.n) == (0, 0, 100)
    assert cmp.p_value == 1.0 and not cmp.significant()


def test_clear_gain_is_significant_and_a_loss_never_is() -> None:
    before = [False] * 30 + [True] * 70
    after = [True] * 30 + [True] * 68 + [False] * 2
    cmp = paired_sign_test(before, after)
    assert (cmp.gained, cmp.lost) == (30, 2)
    assert cmp.net_accuracy_change == pytest.approx(0.28)
    assert cmp.p_value < 1e-6 and cmp.significant()
    reverse = paired_sign_test(after, before)
    assert not reverse.significant() and reverse.p_value > 0.99


def test_balanced_flips_are_noise() -> None:
    before = [True, False] * 20
    after = [False, True] * 20
    cmp = paired_sign_test(before, after)
    assert cmp.gained == cmp.lost == 20
    assert 0.5 < cmp.p_value < 0.7 and not cmp.significant()
    assert math.isclose(cmp.net_accuracy_change, 0.0)


def test_mismatched_lengths_name_the_fix() -> None:
    with pytest.raises(ValueError, match="same test items"):
        paired_sign_test([True], [True, False])
