"""Reading a final answer and a one-line rationale out of the standard dataset layouts.

* ``gsm8k``: ``answer`` is the worked solution, then ``#### N`` (GSM8K, Cobbe et al. 2021);
  calculator annotations ``<<48/2=24>>`` are dropped from the rationale.
* ``math``: ``solution`` holds the answer in the last ``\\boxed{...}`` (MATH, Hendrycks et al.
  2021), read with balanced braces so ``\\boxed{1{,}000}`` gives ``1000``.
* ``qa``: a generic ``answer`` column holding the answer itself (optionally a rationale column).

Pure functions: each returns ``(rationale, answer)`` or raises :class:`LayoutError` saying what
is wrong with the text. Answers are normalised with the edge's answer format, so they must be
integers: the clients' answer tables and checkers hold integers.
"""

from __future__ import annotations

import re

from fedgrpo.edge.answer_format import normalise_answer

LAYOUTS = ("gsm8k", "math", "qa")
# default (question column, answer column) per layout
DEFAULT_FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution"), "qa": ("question", "answer")}

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_BOX_COMMANDS = ("\\boxed", "\\fbox")
# LaTeX that wraps or decorates a number without changing it
_LATEX_NOISE = re.compile(r"\\text\{[^{}]*\}|\\mathrm\{[^{}]*\}|\\[!,;: ]|\\%|\^\{?\\circ\}?|\$|\s")


class LayoutError(ValueError):
    """The text does not hold an answer the layout can read (the message says why)."""


def one_line(text: str) -> str:
    """Whitespace (newlines included) collapsed to single spaces: the rationale line."""
    return " ".join(text.split())


def integer_answer(raw: str, what: str) -> str:
    normalised = normalise_answer(raw)
    if normalised is None:
        raise LayoutError(
            f"{what} {raw!r} is not an integer (the clients' answer format holds integers)"
        )
    return normalised


def gsm8k_answer(text: str) -> tuple[str, str]:
    """``'Half of 48 is <<48/2=24>>24.\\n#### 24'`` -> ``('Half of 48 is 24.', '24')``."""
    if "####" not in text:
        raise LayoutError("has no '#### N' final answer")
    body, _, final = text.rpartition("####")
    answer = integer_answer(final.strip(), "the answer after ####")
    rationale = one_line(_CALCULATOR.sub("", body))
    return rationale or answer, answer


def last_boxed(text: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the last ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced;
    None if there is none or its braces never close."""
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0 or text[start:brace].strip() not in _BOX_COMMANDS:
        return None
    depth = 0
    for pos in range(brace, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return start, pos + 1, text[brace + 1 : pos]
    return None


def math_answer(text: str) -> tuple[str, str]:
    """``'So $x = \\boxed{1{,}000}$.'`` -> ``('So x = 1{,}000.', '1000')``."""
    found = last_boxed(text)
    if found is None:
        if any(cmd in text for cmd in _BOX_COMMANDS):
            raise LayoutError("has a \\boxed{ whose braces never close")
        raise LayoutError("has no \\boxed{...} final answer")
    start, end, content = found
    cleaned = _LATEX_NOISE.sub("", content).replace("{,}", ",").strip("{}")
    answer = integer_answer(cleaned, "the boxed answer")
    rationale = one_line((text[:start] + content + text[end:]).replace("$", ""))
    return rationale, answer


def qa_answer(value: object, rationale: object = None) -> tuple[str, str]:
    """A generic answer cell (text or number) and an optional rationale cell."""
    if isinstance(value, bool) or value is None:
        raise LayoutError(f"answer {value!r} is not an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise LayoutError(f"answer {value!r} is not an integer")
        value = int(value)
    answer = integer_answer(str(value), "answer")
    text = one_line(str(rationale)) if rationale not in (None, "") else ""
    return text or answer, answer
