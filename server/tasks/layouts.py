"""Reading a final answer and a one-line rationale out of the standard dataset layouts.

* ``gsm8k``: ``answer`` is the worked solution, then ``#### N`` (GSM8K, Cobbe et al. 2021);
  calculator annotations ``<<48/2=24>>`` are dropped from the rationale.
* ``math``: ``solution`` holds the answer in the last ``\\boxed{...}`` (MATH, Hendrycks et al.
  2021), read with balanced braces so ``\\boxed{1{,}000}`` gives ``1000``.
* ``qa``: a generic ``answer`` column holding the answer itself (optionally a rationale column).

Pure functions: each returns ``(rationale, answer)`` or raises :class:`LayoutError` saying what
is wrong with the text. Answers are normalised with the edge's answer format (integers,
decimals, fractions and LaTeX expressions, one canonical string each), the form the clients'
answer tables and checkers hold.
"""

from __future__ import annotations

import re
from decimal import Decimal

from fedgrpo.edge.answer_format import BOX_COMMANDS, last_boxed, normalise_answer

LAYOUTS = ("gsm8k", "math", "qa")
# default (question column, answer column) per layout
DEFAULT_FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution"), "qa": ("question", "answer")}

_CALCULATOR = re.compile(r"<<[^<>]*>>")


class LayoutError(ValueError):
    """The text does not hold an answer the layout can read (the message says why)."""


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed to single spaces: the rationale line."""
    return " ".join(text.split())


def readable_answer(raw: str, what: str) -> str:
    normalised = normalise_answer(raw)
    if normalised is None:
        raise LayoutError(
            f"{what} {raw!r} is not an answer the clients can read (an integer, decimal, "
            "fraction or LaTeX expression; write a word answer as \\text{...})"
        )
    return normalised


def gsm8k_answer(text: str) -> tuple[str, str]:
    """``'Half of 48 is <<48/2=24>>24.\\n#### 24'`` -> ``('Half of 48 is 24.', '24')``."""
    if "####" not in text:
        raise LayoutError("has no '#### N' final answer")
    body, _, final = text.rpartition("####")
    answer = readable_answer(final.strip(), "the answer after ####")
    rationale = one_line(_CALCULATOR.sub("", body))
    return rationale or answer, answer


def math_answer(text: str) -> tuple[str, str]:
    """``'So $x = \\boxed{1{,}000}$.'`` -> ``('So x = 1{,}000.', '1000')``."""
    found = last_boxed(text)
    if found is None:
        if any(cmd in text for cmd in BOX_COMMANDS):
            raise LayoutError("has a \\boxed{ whose braces never close")
        raise LayoutError("has no \\boxed{...} final answer")
    start, end, content = found
    answer = readable_answer(content, "the boxed answer")
    rationale = one_line((text[:start] + content + text[end:]).replace("$", ""))
    return rationale, answer


def qa_answer(value: object, rationale: object = None) -> tuple[str, str]:
    """A generic answer cell (text or number) and an optional rationale cell."""
    if isinstance(value, bool) or value is None:
        raise LayoutError(f"answer {value!r} is not a number or text")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise LayoutError(f"answer {value!r} is not a finite number")
        value = int(value) if value.is_integer() else format(Decimal(repr(value)), "f")
    answer = readable_answer(str(value), "answer")
    text = one_line(str(rationale)) if rationale not in (None, "") else ""
    return text or answer, answer
