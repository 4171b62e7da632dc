"""The ONNX scorer against a PyTorch reference on real (tiny, trained) models."""

from __future__ import annotations

import numpy as np
import pytest
from edge_reference import (
    TinyBuild,
    candidate_set,
    torch_agreement,
    torch_competence,
    torch_greedy,
    torch_likelihoods,
)

from fedgrpo.edge.answer_format import follows_format
from fedgrpo.edge.answer_span import answer_span
from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig

pytest_plugins = ["edge_fixtures"]


@pytest.fixture(scope="module")
def fp32(gpt2_build: TinyBuild) -> EdgeScorer:
    return EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(variant="fp32", threads=1))


def test_model_is_trained_enough_to_be_meaningful(gpt2_build: TinyBuild, fp32: EdgeScorer) -> None:
    # The fixtures would prove little on a noise model: the trained model must follow the
    # format and prefer the right answer to a wrong one on average.
    texts = fp32.greedy_completions([i.question for i in gpt2_build.other_items[:8]])
    assert sum(follows_format(t) for t in texts) >= 6, texts
    items = gpt2_build.other_items[:8]
    right = fp32.likelihoods([i.question for i in items], [i.completion for i in items])
    wrong = fp32.likelihoods(
        [i.question for i in items],
        [i.completion.replace(f"answer: {i.answer}", "answer: 101") for i in items],
    )
    assert np.mean(right) > np.mean(wrong)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_likelihood_matches_torch_reference(family: str, request: pytest.FixtureRequest) -> None:
    build: TinyBuild = request.getfixturevalue(f"{family}_build")
    scorer = EdgeScorer.load(build.export_dir, ScorerConfig(variant="fp32", forward_batch=5))
    questions, completions = candidate_set(build)
    got = scorer.score(questions, completions, "likelihood")
    want = torch_likelihoods(build, questions, completions)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert got[-2] == 0.0  # no extractable answer
    assert all(0.0 < g <= 1.0 for g, c in zip(got, completions) if answer_span(c))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_agreement_and_greedy_text_match_torch_exactly(
    family: str, request: pytest.FixtureRequest
) -> None:
    build: TinyBuild = request.getfixturevalue(f"{family}_build")
    scorer = EdgeScorer.load(build.export_dir, ScorerConfig(variant="fp32"))
    questions, completions = candidate_set(build)
    unique = list(dict.fromkeys(questions))
    assert scorer.greedy_completions(unique) == torch_greedy(build, unique)
    assert scorer.score(questions, completions, "agreement") == torch_agreement(
        build, questions, completions
    )


def test_competence_matches_torch(gpt2_build: TinyBuild, fp32: EdgeScorer) -> None:
    items = gpt2_build.other_items[:10]
    questions, answers = [i.question for i in items], [i.answer for i in items]
    got = fp32.competence(questions, answers)
    assert got == torch_competence(gpt2_build, questions, answers)
    assert set(got) <= {0.0, 1.0}


def test_quantised_variants_stay_close(gpt2_build: TinyBuild, fp32: EdgeScorer) -> None:
    questions, completions = candidate_set(gpt2_build)
    reference = np.array(fp32.score(questions, completions, "likelihood"))
    for variant, tolerance in (("int8", 0.05), ("int4", 0.1)):
        scorer = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(variant=variant))
        got = np.array(scorer.score(questions, completions, "likelihood"))
        assert np.abs(got - reference).max() < tolerance, (variant, got, reference)
        agree = np.mean(
            np.array(scorer.score(questions, completions, "agreement"))
            == np.array(fp32.score(questions, completions, "agreement"))
        )
        assert agree >= 0.75, variant


def test_batching_does_not_change_rewards(gpt2_build: TinyBuild, fp32: EdgeScorer) -> None:
    questions, completions = candidate_set(gpt2_build)
    batched = fp32.score(questions, completions, "likelihood")
    single = [fp32.score([q], [c], "likelihood")[0] for q, c in zip(questions, completions)]
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_answer_mode_uses_the_local_table(gpt2_build: TinyBuild, fp32: EdgeScorer) -> None:
    item = gpt2_build.table_items[0]
    a, b = item.question.split("+")
    unknown = gpt2_build.other_items[0]
    rewards = fp32.score(
        [item.question, item.question, f"Q: {a} + {b}", unknown.question],
        [item.completion, " 1+1=2\nanswer: 9999", item.completion, unknown.completion],
        "answer",
    )
    # right, wrong, normalised duplicate of the question, question not in the table (0.0)
    assert rewards == [1.0, 0.0, 1.0, 0.0]
    assert len(fp32.answers) == len(gpt2_build.table_items)


def test_auto_is_answer_based_for_known_questions_else_model_based(
    gpt2_build: TinyBuild, fp32: EdgeScorer
) -> None:
    known, unknown = gpt2_build.table_items[1], gpt2_build.other_items[2]
    wrong = " 1+1=2\nanswer: 9999"
    questions = [known.question, known.question, unknown.question, unknown.question]
    completions = [known.completion, wrong, unknown.completion, wrong]
    auto = fp32.score(questions, completions, "auto")
    assert auto[:2] == [1.0, 0.0]
    assert auto[2:] == fp32.score(questions[2:], completions[2:], "agreement")
    like = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(me_mode="likelihood"))
    auto_like = like.score(questions, completions, "auto")
    assert auto_like[:2] == [1.0, 0.0]
    np.testing.assert_allclose(
        auto_like[2:], like.score(questions[2:], completions[2:], "likelihood"), atol=1e-6
    )


def test_format_mode_and_format_weight(gpt2_build: TinyBuild, fp32: EdgeScorer) -> None:
    item = gpt2_build.table_items[0]
    questions = [item.question] * 3
    completions = [item.completion, f" {item.answer}", "answer: 5\nextra line\nanswer: 6"]
    assert fp32.score(questions, completions, "format") == [1.0, 0.0, 0.0]
    mixed = fp32.score(questions, completions, "answer", format_weight=0.25)
    # answer rewards 1, 0, 0 and format rewards 1, 0, 0
    assert mixed == pytest.approx([1.0, 0.0, 0.0])
    wrong_but_formatted = fp32.score([item.question], [" 1+1=2\nanswer: 9999"], "answer", 0.25)
    assert wrong_but_formatted == pytest.approx([0.25])


def test_long_inputs_are_truncated_not_fatal(gpt2_build: TinyBuild, fp32: EdgeScorer) -> None:
    item = gpt2_build.other_items[0]
    long_completion = " " + "1+1=2," * 40 + f"\nanswer: {item.answer}"  # > 96 positions
    (reward,) = fp32.score([item.question], [long_completion], "likelihood")
    assert 0.0 < reward <= 1.0
    (agree,) = fp32.score(["9" * 200], [long_completion], "agreement")
    assert agree in (0.0, 1.0)


def test_greedy_answers_are_cached(gpt2_build: TinyBuild, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(greedy_cache_size=2))
    calls: list[int] = []
    original = scorer.model.greedy

    def counting(*args: object, **kwargs: object) -> list[list[int]]:
        calls.append(len(args[0]))  # type: ignore[arg-type]
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scorer.model, "greedy", counting)
    qs = [i.question for i in gpt2_build.other_items[:2]]
    first = scorer.score(qs + qs, [" x\nanswer: 1"] * 4, "agreement")
    second = scorer.score(qs, [" x\nanswer: 1"] * 2, "agreement")
    assert calls == [2] and first[:2] == second
    scorer.greedy_answers([gpt2_build.other_items[3].question])  # evicts the oldest (cap 2)
    scorer.greedy_answers(qs)
    assert calls == [2, 1, 1]


def test_scorer_rejects_mismatched_inputs(fp32: EdgeScorer) -> None:
    with pytest.raises(ValueError):
        fp32.score(["1+1"], [], "format")
    with pytest.raises(ValueError):
        fp32.score(["1+1"], ["x"], "nonsense")
    with pytest.raises(ValueError):
        ScorerConfig(me_mode="answer")


def test_answer_span_locates_the_final_answer() -> None:
    text = " 7+8=15\nanswer: 7 then **answer: 1,234**, done"
    start, end = answer_span(text)  # type: ignore[misc]
    assert text[start:end] == "1,234"
    full_width = " x\nanswer: \uff17\uff15"  # full-width digits fold to 75
    start, end = answer_span(full_width)  # type: ignore[misc]
    assert full_width[start:end] == "\uff17\uff15"
    assert answer_span(" no answer here") is None


def _batch_of_64(build: TinyBuild) -> tuple[list[str], list[str]]:
    questions, completions = candidate_set(build)
    extra = [i for i in build.other_items if i.question not in questions]
    while len(questions) < 64:  # neighbours of every length, some with long completions
        item = extra[len(questions) % len(extra)]
        questions.append(item.question)
        completions.append(item.completion * (1 + len(questions) % 3))
    return questions, completions


@pytest.mark.parametrize("variant", ["fp32", "int8", "int4"])
def test_a_reward_does_not_depend_on_its_neighbours(gpt2_build: TinyBuild, variant: str) -> None:
    """Issue 17: int8's dynamic activation scales spanned the whole batch, so a candidate's
    reward changed with the other candidates in the request (up to 0.065 on SmolLM2)."""
    scorer = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(variant=variant, threads=1))
    questions, completions = _batch_of_64(gpt2_build)
    batched = scorer.score(questions, completions, "likelihood")
    alone = [scorer.score([q], [c], "likelihood")[0] for q, c in zip(questions, completions)]
    assert any(v > 0 for v in alone)
    tolerance = 0.0 if variant == "int8" else 1e-5  # int8: exactly the same computation
    np.testing.assert_allclose(batched, alone, atol=tolerance, rtol=0)
    assert scorer.model.row_by_row is (variant == "int8")
