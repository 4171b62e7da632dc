"""Canonical forms of non-integer answers: decimals, fractions and LaTeX expressions.

MATH-style answers (``\\frac{1}{2}``, ``0.5``, ``3\\sqrt{5}``, ``(1,-2)``, ``\\text{odd}``) must
reach the device and compare equal on both sides, so every answer has ONE canonical string:

* a **number** (integer, decimal, ``a/b``, ``\\frac{a}{b}``, ``\\dfrac12``; signs, thousands
  separators, ``$``, ``\\%``, degrees and a trailing ``\\text{ unit}`` allowed) becomes the
  exact reduced fraction, written ``p`` or ``p/q``: ``0.5``, ``2/4`` and ``\\frac{1}{2}`` are all
  ``1/2``; integers keep the form they always had (``0042`` -> ``42``, ``-0`` -> ``0``);
* any other **expression** is normalised the way the MATH benchmark's exact-match checker does
  (Hendrycks et al. 2021, ``strip_string``): ``\\left``/``\\right``, spacing commands and spaces
  dropped, ``\\dfrac``/``\\tfrac`` -> ``\\frac``, ``\\frac12`` -> ``\\frac{1}{2}``,
  ``\\sqrt2`` -> ``\\sqrt{2}``, a short ``x=`` prefix dropped. Equality is then exact string
  equality: ``\\frac{\\sqrt{2}}{2}`` and ``\\frac{1}{\\sqrt{2}}`` differ (a server-side task can
  plug a symbolic checker into ``Task.is_correct``; the device compares canonical strings).

An expression must look like mathematics: at least one digit or LaTeX command, and no plain
word of two or more letters outside ``\\text{...}`` (so ``answer: 75 because 7+8=15`` is the
number 75 followed by prose, and a plain-word answer is written ``\\text{odd}``). Integers
joined only by ``+ - *`` (``5-3``) and a number, a space and a letter (``5 a``) are not
expressions either: such lines are read by their leading integer, exactly as before
non-integer answers existed, so every integer-only output scores as it always did.

Pure Python (stdlib only): the edge, the server and the simulator all call it.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_ANSWER_CHARS = 200  # longer is not an answer (and keeps Fraction/int parsing cheap)

_DECIMAL = re.compile(r"([+-]?)(\d[\d,]*)?(?:\.(\d+))?\.?")
_RATIO = re.compile(r"([+-]?\d+)/([+-]?\d+)")
_FRAC = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}")
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{")
_UNIT_TAIL = re.compile(r"^(.*?\d)\s*\\text\{[^{}]*\}\s*$")
_DECORATION = re.compile(r"\\\$|^\$|\$$|\\?%$|\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\{,\}")
_SPACING = re.compile(r"\\(?:left|right|displaystyle)(?![A-Za-z])|\\[!,;: ]")
_SHORT_FRAC = re.compile(r"\\frac\s*(\d|\\?[A-Za-z])\s*(\d|\\?[A-Za-z])")
_SHORT_SQRT = re.compile(r"\\sqrt\s*(\d|[A-Za-z])")
# integers joined by + - * only are unevaluated arithmetic, not an answer; a number, a space
# and a letter is a number followed by prose
_INTEGER_ARITHMETIC = re.compile(r"[\d\s,+\-*]*")
_NUMBER_THEN_WORD = re.compile(r"\s*[+-]?\d[\d,.]*\s+[A-Za-z]")
_MATH_CHARS = re.compile(r"[\w\\{}()\[\]|+\-*/^=<>,.!']+")
_LETTERS = re.compile(r"\\[A-Za-z]+|[A-Za-z]{2,}")
_UNICODE = str.maketrans({"\u03c0": "\\pi ", "\u221e": "\\infty ", "\u221a": "\\sqrt "})


def canonical_number(text: str) -> str | None:
    """``'0.50'`` -> ``'1/2'``, ``'\\frac{-6}{4}'`` -> ``'-3/2'``, ``'1,000'`` -> ``'1000'``;
    None if ``text`` is not exactly one number (decorations aside)."""
    value = number_value(text)
    if value is None:
        return None
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


def number_value(text: str) -> Fraction | None:
    """The exact value of a number written any of the accepted ways, else None."""
    body = _undecorate(text)
    if not body or len(body) > MAX_ANSWER_CHARS:
        return None
    m = _DECIMAL.fullmatch(body)
    if m and (m.group(2) or m.group(3)):
        whole = (m.group(2) or "0").replace(",", "")
        value = Fraction(int(whole)) + (
            Fraction(int(m.group(3)), 10 ** len(m.group(3))) if m.group(3) else 0
        )
        return -value if m.group(1) == "-" else value
    ratio = _RATIO.fullmatch(body) or _FRAC.fullmatch(body)
    if ratio is None:
        return None
    sign = -1 if ratio.re is _FRAC and ratio.group(1) == "-" else 1
    numerator, denominator = (int(g) for g in ratio.groups()[-2:])
    if denominator == 0:
        return None
    return sign * Fraction(numerator, denominator)


def answer_credit(answer: str | None, reference: str, partial: float = 0.0) -> float:
    """The reward of a normalised ``answer`` against the normalised ``reference``, in [0, 1].

    1.0 for an exact match. A wrong *number* earns ``partial × closeness``, with
    closeness = max(0, 1 - |answer - reference| / max(|reference|, 1)): a relative error,
    so ``56`` for ``496`` earns far less than ``486``. Anything else, and every wrong answer
    when ``partial`` is 0 (the default: plain exact match), earns 0.0. Partial credit gives
    GRPO a gradient on questions no sample gets exactly right; a dense reward, so the policy
    is pushed towards the right size of number instead of only the items it already solves.
    """
    if answer is None:
        return 0.0
    if answer == reference:
        return 1.0
    if partial <= 0.0:
        return 0.0
    got, want = number_value(answer), number_value(reference)
    if got is None or want is None:
        return 0.0
    closeness = 1.0 - float(abs(got - want)) / max(float(abs(want)), 1.0)
    return partial * max(0.0, closeness)


def canonical_expression(text: str) -> str | None:
    """The MATH-style normal form of a mathematical expression, else None (see module doc)."""
    if _INTEGER_ARITHMETIC.fullmatch(text) or _NUMBER_THEN_WORD.match(text):
        return None  # "5-3", "75 apples": read as before, by their leading integer
    body = _normalise_latex(text)
    if not body or len(body) > MAX_ANSWER_CHARS:
        return None
    number = canonical_number(body)
    if number is not None:
        return number
    outside_text = _TEXT_CMD.sub("", _strip_text_args(body))
    if any(not w.startswith("\\") for w in _LETTERS.findall(outside_text)):
        return None  # a plain word: prose, not an answer (write words as \text{...})
    if not re.search(r"\d|\\[A-Za-z]", body) or not _well_formed(body):
        return None
    return body


def _well_formed(body: str) -> bool:
    """Braces balanced, no dangling operator at either end (``1/``, ``\\frac{1}{``)."""
    depth = 0
    for char in body:
        depth += (char == "{") - (char == "}")
        if depth < 0:
            return False
    return (
        depth == 0
        and body[-1] not in "/+-*^_=\\,"
        and bool(re.match(r"[\w\\({\[|.+\-]", body))
        and bool(_MATH_CHARS.fullmatch(body))
    )


def _undecorate(text: str) -> str:
    body = _unbrace(re.sub(r"\s+", "", _TEXT_CMD.sub(r"\\text{", _normalise_commands(text))))
    unit = _UNIT_TAIL.match(body)
    if unit:
        body = unit.group(1)
    body = _DECORATION.sub("", body)
    body = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", body)
    if body.startswith(".") or body.startswith("-.") or body.startswith("+."):
        body = body.replace(".", "0.", 1)
    return body


def _normalise_commands(text: str) -> str:
    text = text.translate(_UNICODE)
    text = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", text)
    return _SPACING.sub("", text)


def _normalise_latex(text: str) -> str:
    body = _normalise_commands(text.strip())
    body = _TEXT_CMD.sub(r"\\text{", body)
    body = re.sub(r"\s+", "", body)
    body = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", body)
    body = _SHORT_SQRT.sub(r"\\sqrt{\1}", body)
    body = re.sub(r"\^\{?\\circ\}?|\\\$|^\$|\$$", "", body)
    lhs, eq, rhs = body.partition("=")
    if eq and 0 < len(lhs) <= 2 and "=" not in rhs and rhs:  # "x=5" -> "5" (MATH's rule)
        body = rhs
    return _unbrace(body)


def _unbrace(body: str) -> str:
    """``{{12}}`` -> ``12``: braces around the whole answer change nothing."""
    while body.startswith("{") and _closing(body) == len(body) - 1:
        body = body[1:-1]
    return body


def _closing(body: str) -> int:
    depth = 0
    for pos, char in enumerate(body):
        depth += (char == "{") - (char == "}")
        if depth == 0:
            return pos
    return -1


def _strip_text_args(body: str) -> str:
    """``\\text{odd}`` -> ``\\text{}``: words inside text commands are the answer, not prose."""
    return re.sub(r"(\\text\{)[^{}]*\}", r"\1}", body)
