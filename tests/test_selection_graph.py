"""Confidence-graph math: neighbours, competence with unknowns, seeded tie-breaking."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.selection.graph import competence_scores, cosine_neighbours, l2_normalise, top_m


def test_l2_normalise() -> None:
    x = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]])


def test_neighbours_hand_made() -> None:
    aux = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    q = np.array([[10.0, 1.0], [0.0, -1.0]])  # scale must not matter
    nb = cosine_neighbours(q, aux, 2)
    # q0: cos 0.995, 0.0995, 0.774, -0.995; q1 = (0,-1): 0, -1, -0.707, 0 → tie in index order
    assert nb.tolist() == [[0, 2], [0, 3]]
    assert cosine_neighbours(q, aux, 99).shape == (2, 4)  # L clipped to N
    with pytest.raises(ConfigError, match="L=0"):
        cosine_neighbours(q, aux, 0)


def test_competence_unknown_uses_prior() -> None:
    comp = np.array(
        [
            [1.0, 1.0, 0.0, 0.0],
            [np.nan, np.nan, np.nan, np.nan],  # never measured
            [0.0, np.nan, 1.0, 1.0],
        ]
    )
    nb = np.array([[0, 1], [2, 3], [1, 2]])
    s = competence_scores(comp, nb, prior=0.5)
    np.testing.assert_allclose(s, [[1.0, 0.5, 0.25], [0.0, 0.5, 1.0], [0.5, 0.5, 0.75]])
    s2 = competence_scores(comp, nb, prior=1.0)
    assert s2[1, 1] == 1.0  # optimistic prior: a new client is tried first
    with pytest.raises(ConfigError, match="prior"):
        competence_scores(comp, nb, prior=2.0)


def test_top_m_order_and_availability() -> None:
    s = np.array([[0.1, 0.9, 0.5, 0.7]])
    rng = np.random.default_rng(0)
    assert top_m(s, 2, rng).tolist() == [[1, 3]]
    assert top_m(s, 2, rng, np.array([True, False, True, True])).tolist() == [[3, 2]]
    assert top_m(s, 5, rng, np.array([True, False, False, True])).tolist() == [[3, 0]]
    assert top_m(s, 2, rng, np.zeros(4, dtype=bool)).shape == (1, 0)
    with pytest.raises(ConfigError, match="M=0"):
        top_m(s, 0, rng)


def test_ties_seeded_and_unbiased() -> None:
    s = np.array([[0.5, 0.5, 0.5, 0.5, 0.1]] * 400)
    a = top_m(s, 1, np.random.default_rng(7))
    b = top_m(s, 1, np.random.default_rng(7))
    c = top_m(s, 1, np.random.default_rng(8))
    assert (a == b).all() and not (a == c).all()
    counts = Counter(a[:, 0].tolist())
    assert set(counts) == {0, 1, 2, 3}  # the worse client 4 never wins
    assert min(counts.values()) > 60  # ~100 each: not biased to low indices
    # first-pick distribution for the first question over many seeds is also spread
    firsts = Counter(int(top_m(s[:1], 1, np.random.default_rng(i))[0, 0]) for i in range(200))
    assert min(firsts[k] for k in range(4)) > 25


def test_float_near_ties_are_ties() -> None:
    s = np.array([[0.1 + 0.2, 0.3, 0.0]] * 200)  # 0.30000000000000004 vs 0.3
    picks = Counter(top_m(s, 1, np.random.default_rng(1))[:, 0].tolist())
    assert set(picks) == {0, 1}
