"""Non-integer answers on the wire: decimals, fractions and LaTeX expressions.

The device, the server and the simulator read answers with one function
(:func:`fedgrpo.edge.answer_format.extract_answer`); these tests pin the canonical forms, the
span the likelihood reward scores, and — against a frozen copy of the integer-only reader it
replaced — that every integer-only output still reads exactly as it did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgrpo.edge.answer_format import (
    extract_answer,
    fold_text,
    follows_format,
    is_correct,
    normalise_answer,
)
from fedgrpo.edge.answer_span import answer_span
from fedgrpo.edge.answer_table import AnswerTable, AnswerTableError

EQUAL = [
    ("1/2", ["0.5", ".5", "2/4", "\\frac{1}{2}", "\\dfrac12", "\\tfrac{2}{4}", "$\\frac 1 2$", "0.50"]),
    ("-3/4", ["-0.75", "-\\frac{3}{4}", "\\frac{-3}{4}", "-6/8"]),
    ("1000", ["1,000", "1{,}000", "\\$1,000", "1000.0", "{{1000}}", "1000\\text{ dollars}"]),
    ("30", ["30^\\circ", "30^{\\circ}", "30\\%", "x = 30"]),
    ("3\\sqrt{5}", ["3\\sqrt5", "3 \\sqrt{5}", "3\\sqrt {5}"]),
    ("\\frac{\\sqrt{3}}{2}", ["\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", "$\\frac{\\sqrt{3}}{2}$"]),
    ("(1,-2)", ["(1, -2)", "\\left( 1, -2 \\right)"]),
    ("\\text{odd}", ["\\textbf{odd}", "\\mathrm{odd}", "\\boxed{\\text{odd}}"]),
    ("\\pi", ["\u03c0", "\\boxed{\\pi}"]),
]


@pytest.mark.parametrize(("canonical", "spellings"), EQUAL, ids=[c for c, _ in EQUAL])
def test_every_spelling_of_an_answer_has_one_canonical_form(canonical: str, spellings: list[str]) -> None:
    assert normalise_answer(canonical) == canonical
    for spelling in spellings:
        assert normalise_answer(spelling) == canonical, spelling
        assert extract_answer(f" work\nanswer: {spelling}") == canonical, spelling
        assert is_correct(f" work\nanswer: {spelling}", canonical)


def test_different_values_stay_different_and_prose_is_not_an_answer() -> None:
    assert normalise_answer("1/3") != normalise_answer("0.33")
    assert normalise_answer("\\sqrt{2}") != normalise_answer("2")
    assert not is_correct(" w\nanswer: 0.5", "2")
    for prose in ("odd", "seventy", "a", "", "  ", "1/", "\\frac{1}{"):
        assert normalise_answer(prose) is None, prose
    assert extract_answer(" w\nanswer: 75 because 7+8=15") == "75"
    assert extract_answer(" w\nanswer: 3.5 cups of flour") == "7/2"
    assert extract_answer(" w\nanswer: \\frac{1}{2} \nanswer: 0.25") == "1/4"  # the last counts
    assert extract_answer("so the result is \\boxed{\\frac{2}{6}}.") == "1/3"


def test_the_format_accepts_clean_non_integer_answers_only() -> None:
    assert follows_format(" half of 1\nanswer: 1/2")
    assert follows_format(" half of 1\nanswer: \\frac{1}{2}")
    assert follows_format(" root\nanswer: 3\\sqrt{5}")
    assert not follows_format(" half\nanswer: a half")
    assert not follows_format(" w\nanswer: 1,000")  # integers keep the strict form
    assert not follows_format(" w\nanswer: 12.")


@pytest.mark.parametrize(
    ("completion", "span"),
    [
        (" w\nanswer: \\frac{1}{2}.", "\\frac{1}{2}"),
        (" w\nanswer: **0.75**", "0.75"),
        (" w\nanswer: 3\\sqrt{5}", "3\\sqrt{5}"),
        (" w\nanswer: 12 apples", "12"),
        ("so \\boxed{\\dfrac{1}{4}}", "\\dfrac{1}{4}"),
        (" w\nanswer: \uff11/\uff12", "\uff11/\uff12"),  # full-width digits fold; the span is raw
    ],
)
def test_the_likelihood_span_covers_the_whole_answer(completion: str, span: str) -> None:
    found = answer_span(completion)
    assert found is not None and completion[found[0] : found[1]] == span


def test_answer_tables_hold_fractions_decimals_and_expressions(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    rows = [
        {"question": "half of 1", "answer": "\\frac{1}{2}"},
        {"question": "a quarter", "answer": 0.25},
        {"question": "root of 45", "answer": "3\\sqrt{5}"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = AnswerTable.load(path)
    assert [table.lookup(q) for q in ("half of 1", "a quarter", "root of 45")] == ["1/2", "1/4", "3\\sqrt{5}"]
    path.write_text('{"question": "q", "answer": "one half"}\n')
    with pytest.raises(AnswerTableError, match=r"answers.jsonl:1: .*write words as \\text"):
        AnswerTable.load(path)


# --- the integer-only reader this replaced, frozen, as the oracle for integer outputs ------
_OLD_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*[*_`$]*\s*([+-]?\d[\d,]*)", flags=re.IGNORECASE)
_OLD_BOXED = re.compile(r"\\boxed\{\s*([+-]?\d[\d,]*)\s*\}")
_OLD_FORMAT = re.compile(r"^\s*[^\n]*\S[^\n]*\nanswer: -?\d+\s*$")


def _old_extract(completion: str) -> str | None:
    text = fold_text(completion)
    matches = _OLD_ANSWER.findall(text) or _OLD_BOXED.findall(text)
    if not matches:
        return None
    plain = fold_text(matches[-1]).strip().replace(",", "").replace("_", "")
    return str(int(plain)) if re.fullmatch(r"[+-]?\d+", plain) else None


# what the tiny zoo's character models and integer tasks write: digits, signs, separators,
# markdown, words, restated answer lines -- but no decimal point, slash, caret, backslash or
# dollar, and no lone letter (``answer: 2x`` and ``answer: * $5`` read as answers now, by design)
PIECES = ["answer", "answer:", "Answer is", ":", " ", "\n", "-", "+", ",", "*", "**", "`", "_",
          "so", "is", "then", "0", "7", "42", "1,000", "=", "%", "\u2212", "\uff17", "sort", "rev"]  # fmt: skip
INTEGER_TEXT = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)


@settings(max_examples=1000, deadline=None)
@given(INTEGER_TEXT)
def test_integer_outputs_read_exactly_as_before(text: str) -> None:
    assert extract_answer(text) == _old_extract(text)
    assert follows_format(" r\n" + text) == bool(_OLD_FORMAT.match(fold_text(" r\n" + text)))


def test_the_shipped_math_sample_keeps_its_fractions_and_radicals() -> None:
    from fedgrpo.server.tasks.dataset import DatasetSpec, DatasetTask

    task = DatasetTask(DatasetSpec("sample:math", "math", domain_field="type"))
    items = list(task.items())
    answers = {i.answer for i in items}
    assert {"3/2", "1/4", "3\\sqrt{5}", "1/6", "3/8"} <= answers and task.skipped == 0
    table = AnswerTable((i.question, i.answer) for i in items)  # what a client would hold
    for item in items:  # the training completion is what the device reads back, exactly
        assert table.lookup(item.question) == extract_answer(item.completion) == item.answer
        assert follows_format(item.completion)


def test_dataset_zoo_models_can_write_latex_and_arithmetic_models_are_unchanged() -> None:
    from fedgrpo.server.tasks.dataset import DatasetSpec
    from fedgrpo.server.tasks.registry import TaskSource
    from fedgrpo.server.zoo.recipes import SuiteSpec, ZooSpec
    from fedgrpo.server.zoo.tokenizer import alphabet, build_char_tokenizer

    builtin = ZooSpec()
    assert {r.tokenizer for r in builtin.recipes()} == {"char-v1"}  # arithmetic digests as before
    source = TaskSource(kind="dataset", dataset=DatasetSpec("sample:math", "math", domain_field="type"))
    math = ZooSpec(suite=SuiteSpec(domains=(), test_per_domain=3, aux_pool_per_domain=3, source=source))
    assert {r.tokenizer for r in math.recipes()} == {"char-v2"}
    v1, v2 = (build_char_tokenizer(alphabet(n)) for n in ("char-v1", "char-v2"))
    text = " so\nanswer: 3\\sqrt{5}"
    assert v2.decode(v2.encode(text).ids) == text  # every character has its own token
    assert "<unk>" in v1.encode(text).tokens
    assert all(v1.token_to_id(c) == v2.token_to_id(c) for c in alphabet("char-v1"))
