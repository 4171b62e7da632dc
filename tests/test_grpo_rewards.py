"""Combining several experts' rewards per candidate."""

from __future__ import annotations

import numpy as np
import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.server.grpo.rewards import combine, reward_table, split_missing

NAN = np.nan


def test_mean_median_ignore_missing() -> None:
    r = np.array([[1.0, 0.0, NAN], [NAN, NAN, NAN], [0.2, 0.4, 0.9]])
    mean = combine(r, method="mean")
    assert mean[0] == pytest.approx(0.5) and np.isnan(mean[1]) and mean[2] == pytest.approx(0.5)
    med = combine(r, method="median")
    assert med[0] == pytest.approx(0.5) and np.isnan(med[1]) and med[2] == pytest.approx(0.4)


def test_mask_instead_of_nan() -> None:
    r = np.array([[1.0, 0.0, 7.0]])
    m = np.array([[True, True, False]])
    assert combine(r, m)[0] == pytest.approx(0.5)
    assert np.isnan(combine(r, np.zeros_like(m)))[0]


def test_trimmed_mean_small_counts() -> None:
    # n=1,2: nothing cut; n=5, trim .2: one cut each end; never everything cut
    r = np.array(
        [
            [0.3, NAN, NAN, NAN, NAN],
            [0.0, 1.0, NAN, NAN, NAN],
            [0.0, 0.1, 0.2, 0.3, 10.0],
            [0.0, 0.5, 1.0, NAN, NAN],
        ]
    )
    out = combine(r, method="trimmed_mean", trim=0.2)
    np.testing.assert_allclose(out, [0.3, 0.5, 0.2, 0.5])
    out = combine(r, method="trimmed_mean", trim=0.49)
    np.testing.assert_allclose(out, [0.3, 0.5, 0.2, 0.5])  # n=5 → k=2 → median
    assert combine(r, method="trimmed_mean", trim=0.0)[2] == pytest.approx(2.12)


def test_errors_name_allowed_values() -> None:
    with pytest.raises(ConfigError, match="allowed"):
        combine(np.zeros((2, 2)), method="max")
    with pytest.raises(ConfigError, match="trim"):
        combine(np.zeros((2, 2)), method="trimmed_mean", trim=0.5)


def test_reward_table_and_split_missing() -> None:
    table = reward_table(4, [7, 3], {7: {0: 1.0, 1: 0.0}, 3: {2: 0.5}})
    assert table.shape == (4, 2)
    values, mask = split_missing(combine(table))
    np.testing.assert_allclose(values, [1.0, 0.0, 0.5, 0.0])
    assert mask.tolist() == [True, True, True, False]
    with pytest.raises(ConfigError):
        reward_table(2, [0], {0: {5: 1.0}})
