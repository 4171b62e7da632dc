"""Partial credit (``partial_credit`` of a client group): a wrong number earns part of the reward.

The pure rule (:func:`fedgrpo.edge.answer_math.answer_credit`), then a real ONNX scorer with
its answer table (AE) and its own greedy answers (agreement), and the CLI flag's bad value.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from edge_reference import TinyBuild
from hypothesis import given
from hypothesis import strategies as st

from fedgrpo.edge.answer_math import answer_credit
from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig

pytest_plugins = ["edge_fixtures"]


def test_exact_match_earns_one_and_partial_zero_is_plain_exact_match() -> None:
    assert answer_credit("496", "496", 0.5) == 1.0
    assert answer_credit("486", "496") == 0.0  # default: exact match only
    assert answer_credit(None, "496", 0.5) == 0.0
    assert answer_credit("\\text{odd}", "3", 0.5) == 0.0  # not a number: nothing


def test_a_wrong_number_earns_partial_times_closeness() -> None:
    # 486 for 496: 10/496 off; 56 (a truncated product): 440/496 off
    assert answer_credit("486", "496", 0.5) == pytest.approx(0.5 * (1 - 10 / 496))
    assert answer_credit("56", "496", 0.5) == pytest.approx(0.5 * (1 - 440 / 496))
    assert answer_credit("5000", "496", 0.5) == 0.0  # more than 100 % off: floor at 0
    assert answer_credit("1/2", "1", 0.4) == pytest.approx(0.2)  # fractions by value
    # a reference of 0 (mod answers) is compared on the scale of 1, not divided by zero
    assert answer_credit("1", "0", 0.5) == 0.0 and answer_credit("0", "0", 0.5) == 1.0


@given(
    st.integers(-10_000, 10_000),
    st.integers(-10_000, 10_000),
    st.integers(-10_000, 10_000),
    st.floats(0.0, 1.0),
)
def test_credit_is_bounded_and_never_rewards_a_farther_answer_more(
    want: int, a: int, b: int, partial: float
) -> None:
    ca, cb = (answer_credit(str(x), str(want), partial) for x in (a, b))
    assert 0.0 <= ca <= 1.0 and 0.0 <= cb <= 1.0
    if a != want and b != want:
        assert ca <= partial + 1e-12
        if abs(a - want) <= abs(b - want):
            assert ca >= cb - 1e-12


def test_scorer_gives_partial_credit_in_answer_and_agreement_modes(gpt2_build: TinyBuild) -> None:
    scorer = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig())
    item = gpt2_build.table_items[0]
    truth = int(item.answer)
    close, far = f" 1+1=2\nanswer: {truth + 1}", f" 1+1=2\nanswer: {truth * 100 + 7}"
    questions = [item.question] * 3
    completions = [item.completion, close, far]
    assert scorer.score(questions, completions, "answer") == [1.0, 0.0, 0.0]
    exact, near, away = scorer.score(questions, completions, "answer", 0.0, 0.5)
    assert exact == 1.0 and near == pytest.approx(0.5 * (1 - 1 / max(abs(truth), 1)))
    assert away == 0.0
    # agreement: the reference is the device's own greedy answer
    other = gpt2_build.other_items[0]
    (own,) = scorer.greedy_answers([other.question])
    assert own is not None
    mine, off = f" 1+1=2\nanswer: {own}", f" 1+1=2\nanswer: {int(own) + 1}"
    plain = scorer.score([other.question] * 2, [mine, off], "agreement")
    shaped = scorer.score([other.question] * 2, [mine, off], "agreement", 0.0, 0.5)
    assert plain == [1.0, 0.0] and shaped[0] == 1.0 and 0.0 < shaped[1] < 0.5


def test_cli_refuses_partial_credit_outside_unit_interval(gpt2_build: TinyBuild) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fedgrpo.edge.cli", "score", "-", "--model", str(gpt2_build.export_dir),
         "--partial-credit", "1.5"],
        input="", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "--partial-credit must be in [0, 1], got 1.5" in proc.stderr
