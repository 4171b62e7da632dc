"""The helpers the vectorised simulator's speed rests on give what the plain numpy calls
give: packed-key sorts against ``np.lexsort`` (ties included), the random selector's fast
path against a row-by-row reference, the surrogate round's lazy question ids."""

from __future__ import annotations

import numpy as np

from fedgrpo.selection import RandomSelector
from fedgrpo.sim.rewards import QuestionIds
from fedgrpo.sim.vround import positions_by, sorted_by


def test_sorted_by_is_lexsort_with_ties() -> None:
    rng = np.random.default_rng(0)
    for n, clients, values in ((1, 1, 1), (500, 40, 7), (5000, 3000, 10_000), (2000, 5, 2)):
        major = rng.integers(0, clients, n)
        minor = rng.integers(0, values, n) / 4.0  # few distinct values: many exact ties
        np.testing.assert_array_equal(sorted_by(major, minor), np.lexsort((minor, major)))
        np.testing.assert_array_equal(sorted_by(major), np.argsort(major, kind="stable"))
    huge = np.array([2**62, 3, 2**62, 0])  # keys too wide to pack: the plain sorts
    np.testing.assert_array_equal(sorted_by(huge, np.zeros(4)), np.lexsort((np.zeros(4), huge)))
    assert sorted_by(np.zeros(0, dtype=np.int64)).tolist() == []


def test_positions_by() -> None:
    assert positions_by(np.array([5, 2, 5, 5, 2, 0])).tolist() == [0, 0, 1, 2, 1, 0]


def _reference(rows: np.ndarray, m: int) -> np.ndarray | None:
    """The first m distinct ids of each row, in order; None if a row has fewer."""
    out = []
    for row in rows.tolist():
        seen = list(dict.fromkeys(row))
        if len(seen) < m:
            return None
        out.append(seen[:m])
    return np.array(out)


def test_random_selector_fast_path_is_first_distinct_ids() -> None:
    for n, m, seed in ((100_000, 3, 0), (6, 3, 1), (12, 4, 2)):
        got = RandomSelector(n, M=m).select_array(3000, np.random.default_rng(seed))
        rows = np.random.default_rng(seed).integers(0, n, size=(3000, m + 4))
        want = _reference(rows, m)
        if want is None:  # some row needed the permutation fallback: rows still distinct
            assert all(len(set(r)) == m for r in got.tolist())
        else:
            np.testing.assert_array_equal(got, want)


def test_question_ids_are_the_round_ids() -> None:
    q = QuestionIds(7, 4)
    assert len(q) == 4 and list(q) == ["r7q0", "r7q1", "r7q2", "r7q3"]
    assert q[-1] == "r7q3" and q[1:3] == ["r7q1", "r7q2"] and "r7q2" in q
