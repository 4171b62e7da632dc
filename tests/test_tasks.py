"""Domain generators, splits and the answer format."""

from __future__ import annotations

import pytest

from fedgrpo.edge.answer_format import (
    extract_answer,
    follows_format,
    is_correct,
    make_completion,
    normalise_answer,
    normalise_question,
)
from fedgrpo.errors import ConfigError
from fedgrpo.server.tasks import DOMAINS, build_suite


def test_generators_are_deterministic_per_seed() -> None:
    a = build_suite(["add", "mul"], seed=3, train_per_domain=50, test_per_domain=20, aux_pool_per_domain=10)
    b = build_suite(["add", "mul"], seed=3, train_per_domain=50, test_per_domain=20, aux_pool_per_domain=10)
    c = build_suite(["add", "mul"], seed=4, train_per_domain=50, test_per_domain=20, aux_pool_per_domain=10)
    assert a.train() == b.train() and a.test() == b.test() and a.aux_pool() == b.aux_pool()
    assert a.train() != c.train()


def test_adding_a_domain_does_not_change_another_domains_items() -> None:
    one = build_suite(["add"], seed=0, train_per_domain=30)
    two = build_suite(["sub", "add"], seed=0, train_per_domain=30)
    assert one.train("add") == two.train("add") and one.test("add") == two.test("add")


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_splits_never_share_a_question(name: str) -> None:
    suite = build_suite([name], seed=0, train_per_domain=None)
    train = {i.question for i in suite.train()}
    test = {i.question for i in suite.test()}
    aux = {i.question for i in suite.aux_pool()}
    assert not (train & test) and not (train & aux) and not (test & aux)
    assert len(train) == len(suite.train())  # no duplicates inside a split either


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_every_item_is_self_consistent(name: str) -> None:
    domain = DOMAINS[name]
    for i in range(0, domain.space_size, max(1, domain.space_size // 300)):
        item = domain.make(i)
        expr = item.question.replace("rev ", "").replace("sort ", "")
        if name in ("add", "sub", "mul", "mod"):
            assert str(eval(expr)) == item.answer  # our own arithmetic strings
        elif name == "rev":
            assert item.answer == expr[::-1]
        else:
            assert item.answer == "".join(sorted(expr))
        assert follows_format(item.completion)
        assert extract_answer(item.completion) == normalise_answer(item.answer)


def test_changing_the_train_cap_keeps_test_and_aux_fixed() -> None:
    small = build_suite(["add"], seed=0, train_per_domain=10)
    large = build_suite(["add"], seed=0, train_per_domain=500)
    assert small.test() == large.test() and small.aux_pool() == large.aux_pool()
    assert large.train()[:10] == small.train()


def test_split_sizes_that_do_not_fit_give_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"'mul' has only 720 distinct problems"):
        build_suite(["mul"], test_per_domain=700, aux_pool_per_domain=100)
    with pytest.raises(ConfigError, match="unknown domain 'div'; known domains: add"):
        build_suite(["div"])


def test_auxiliary_set_is_spread_over_domains() -> None:
    import random

    suite = build_suite(["add", "sub", "mul"], seed=0, train_per_domain=10)
    aux = suite.auxiliary_set(10, random.Random(0))
    counts = {d: sum(i.domain == d for i in aux) for d in suite.domains}
    assert sorted(counts.values()) == [3, 3, 4]
    with pytest.raises(ConfigError, match="raise aux_pool_per_domain"):
        suite.auxiliary_set(1000, random.Random(0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 7+8=15,2+4+1=7\nanswer: 75", "75"),
        ("answer: 12\nanswer: 13", "13"),  # the last answer counts
        ("answer: 0042 because reasons", "42"),
        ("ANSWER:   -7.", "-7"),
        ("answer: \u22127", "-7"),  # unicode minus
        ("answer: \uff18\uff15", "85"),  # full-width digits
        ("answer: **1,234**", "1234"),
        ("the answer is 9", "9"),
        ("so \\boxed{36}", "36"),
        ("7+8=15 and no final line", None),
        ("answer: seventy", None),
        ("", None),
        ("answer: -0", "0"),
    ],
)
def test_extract_answer_on_odd_outputs(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_checker_and_format_checker() -> None:
    good = make_completion("3+4=7,1+2+0=3", "37")
    assert is_correct(good, "37") and not is_correct(good, "38") and not is_correct("nothing", "37")
    assert follows_format(good)
    assert not follows_format("answer: 37")  # no rationale line
    assert not follows_format(good + "\nmore text")
    assert not follows_format(" rationale\nanswer: thirty")


def test_normalise_question_matches_equivalent_spellings() -> None:
    assert normalise_question("Q: 27 + 48\nA:") == normalise_question("27+48")
    assert normalise_question("REV  1234 ?") == normalise_question("rev 1234")
    assert normalise_question("7 \u00d7 36") == normalise_question("7*36")
    assert normalise_question("27+48") != normalise_question("27+49")
