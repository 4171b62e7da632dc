"""Each domain's classic slip: same worked format, a wrong answer exactly where the slip bites."""

from __future__ import annotations

import pytest

from fedgrpo.edge.answer_format import extract_answer, follows_format
from fedgrpo.server.tasks.domains import DOMAINS
from fedgrpo.server.tasks.misconceptions import MISCONCEPTIONS, misconceive


@pytest.mark.parametrize(
    ("domain", "index_question", "rationale", "answer"),
    [
        ("add", "27+48", "7+8=15,2+4+0=6", "65"),  # the carry is forgotten
        ("sub", "52-27", "7-2=5,5-2=3", "35"),  # smaller digit from larger, no borrow
        ("mul", "7*38", "7*8=56,7*3+0=21", "216"),  # carry into the tens dropped
        ("mod", "47%5", "5*8=40,47-40=7", "7"),  # quotient one short
        ("sort", "sort 3142", "4,3,2,1", "4321"),  # descending
        ("rev", "rev 1234", "1,2,3,4", "1234"),  # copied unchanged
    ],
)
def test_known_slips(domain: str, index_question: str, rationale: str, answer: str) -> None:
    item = next(
        DOMAINS[domain].make(i)
        for i in range(DOMAINS[domain].space_size)
        if DOMAINS[domain].make(i).question == index_question
    )
    slipped = misconceive(item)
    assert (slipped.question, slipped.rationale, slipped.answer) == (index_question, rationale, answer)
    assert slipped.answer != item.answer
    assert follows_format(slipped.completion) and extract_answer(slipped.completion) == answer


def test_slip_is_moot_without_a_carry_or_borrow() -> None:
    add = DOMAINS["add"].make(0)  # 10+10: no carry
    assert misconceive(add).answer == add.answer
    sub = next(i for i in map(DOMAINS["sub"].make, range(50)) if int(i.question[1]) >= int(i.question[4]))
    assert misconceive(sub) == sub


@pytest.mark.parametrize("domain", sorted(MISCONCEPTIONS))
def test_every_domain_has_a_slip_that_keeps_the_rationale_shape(domain: str) -> None:
    d = DOMAINS[domain]
    changed = 0
    for i in range(0, d.space_size, 37):  # a prime stride reaches every digit pattern
        item = d.make(i)
        slipped = misconceive(item)
        assert slipped.rationale.count(",") == item.rationale.count(",")
        changed += slipped.answer != item.answer
    assert changed > 0
