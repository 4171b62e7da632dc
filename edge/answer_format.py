"""The completion format shared by every model, scorer and checker.

A completion is a short rationale followed by a final answer line::

    Q: 27+48
    A: 7+8=15,2+4+1=7
    answer: 75

Everything here is pure Python (stdlib only) because the edge, the server and the simulator
all parse answers and must agree bit-for-bit.
"""

from __future__ import annotations

import re
import unicodedata

from fedgrpo.edge.answer_math import canonical_expression

ANSWER_PREFIX = "answer:"
QUESTION_PREFIX = "Q: "
ANSWER_CUE = "\nA:"

# Unicode look-alikes that NFKC does not fold but models (and people) emit.
_CHAR_FOLDS = str.maketrans(
    {
        "\u2212": "-",  # minus sign
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u00d7": "*",  # multiplication sign
        "\u2217": "*",  # asterisk operator
        "\u00f7": "/",  # division sign
        "\u066a": "%",  # arabic percent
    }
)

# "answer: ..." up to the line end or the next "answer" (models sometimes restate)
_ANSWER_RE = re.compile(
    r"answer\s*(?:is)?\s*[:=]?\s*([*_`$\s]*(?:(?!answer)[^\n])*)", flags=re.IGNORECASE
)
_LEADING_NUMBER = re.compile(r"[+-]?\d[\d,]*(?:\.\d+)?(?:/\d+)?")  # prose after it is ignored
_LEAD = re.compile(r"[*_`$]*\s*")  # emphasis, then spaces, before the answer
_OLD_INTEGER = re.compile(r"[+-]?\d[\d,]*")
_STARTS = re.compile(r"[+-]?(?:[^\W_]|[\\({\[|.])")  # how an answer begins
_CONTINUES = re.compile(r"\.\d|[A-Za-z]|\s*[\\^/{]")  # ...so the integer is not the answer
_FORMAT_RE = re.compile(r"^\s*[^\n]*\S[^\n]*\nanswer: (\S[^\n]*?)\s*$")
BOX_COMMANDS = ("\\boxed", "\\fbox")  # what last_boxed reads
_MARKUP = "*_`$ \t\n"
MAX_INTEGER_CHARS = 4000  # Python refuses int() of more than 4300 digits


def fold_text(text: str) -> str:
    """NFKC-normalise and fold look-alike characters (full-width digits, minus signs, ×)."""
    return unicodedata.normalize("NFKC", text).translate(_CHAR_FOLDS)


def normalise_answer(answer: str) -> str | None:
    """The one canonical string of an answer, or ``None`` if it is not one.

    Integers as always (no sign for zero, no leading zeros, no separators); decimals and
    fractions as the exact reduced fraction (``0.5`` -> ``1/2``); other LaTeX expressions in
    MATH's exact-match normal form (:mod:`fedgrpo.edge.answer_math`). A whole-answer
    ``\\boxed{...}`` is unwrapped.
    """
    folded = fold_text(answer).strip()
    plain = folded.replace(",", "").replace("_", "")
    if re.fullmatch(r"[+-]?\d+", plain):
        return str(int(plain)) if len(plain) <= MAX_INTEGER_CHARS else None
    boxed = last_boxed(folded)
    if boxed is not None and boxed[0] == 0 and boxed[1] == len(folded):
        folded = boxed[2].strip()
    return canonical_expression(folded)


def locate_answer(folded: str) -> tuple[str, int, int] | None:
    """``(canonical answer, start, end)`` of the final answer in already-folded text.

    The last ``answer: X`` whose ``X`` reads as an answer wins; ``X`` is the rest of the line
    (markdown emphasis and ``$`` around it dropped), or, when prose follows, the number it
    starts with (``answer: 75 because ...``). Without one, the last ``\\boxed{X}``.
    """
    for match in reversed(list(_ANSWER_RE.finditer(folded))):
        found = _read_answer_text(folded, match.start(1), match.end(1))
        if found is not None:
            return found
    boxed = last_boxed(folded)
    if boxed is None:
        return None
    _, end, content = boxed
    value = normalise_answer(content)
    return None if value is None else (value, end - 1 - len(content), end - 1)


def _read_answer_text(text: str, lo: int, hi: int) -> tuple[str, int, int] | None:
    """The answer at the start of ``text[lo:hi]`` (the rest of an ``answer`` line).

    An integer not continued by a decimal point, a letter, ``/``, ``^``, ``{`` or a LaTeX
    command reads as it always did (its digits only: ``75 apples``, ``5-3`` and ``12%5``
    give 75, 5 and 12); anything else is read whole (:func:`normalise_answer`), or, when prose
    follows, by the number it starts with (``3.5 cups`` -> ``7/2``).
    """
    lo = _LEAD.match(text, lo, hi).end()  # type: ignore[union-attr]  # always matches
    integer = _OLD_INTEGER.match(text, lo, hi)
    if integer is not None and not _CONTINUES.match(text, integer.end(), hi):
        return _token(text, lo, integer.end())
    if not _STARTS.match(text, lo, hi) or (text[lo].isalpha() and text[lo - 1].isalpha()):
        return None  # "answer, 0", "answer-=0", "answerx": not an answer line
    end = hi
    while end > lo and text[end - 1] in _MARKUP + ".,;:!?":
        end -= 1
    value = normalise_answer(text[lo:end]) if end > lo else None
    if value is not None:
        return value, lo, end
    number = _LEADING_NUMBER.match(text, lo, hi)
    return None if number is None else _token(text, lo, number.end())


def _token(text: str, lo: int, end: int) -> tuple[str, int, int] | None:
    while end > lo and text[end - 1] == ",":  # "answer: 75, done" -> "75"
        end -= 1
    value = normalise_answer(text[lo:end])
    return None if value is None else (value, lo, end)


def last_boxed(text: str) -> tuple[int, int, str] | None:
    """(start, end, content) of the last ``\\boxed{...}`` / ``\\fbox{...}``, braces balanced;
    None if there is none or its braces never close."""
    start = max(text.rfind(cmd) for cmd in BOX_COMMANDS)
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0 or text[start:brace].strip() not in BOX_COMMANDS:
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


def extract_answer(completion: str) -> str | None:
    """The final answer of a completion, normalised, or ``None`` if there is none.

    Takes the *last* ``answer: X`` (models sometimes restate), tolerates markdown emphasis,
    full-width digits, unicode minus signs, thousands separators and trailing prose, and
    falls back to a LaTeX ``\\boxed{X}`` for general-purpose chat models. ``X`` is an integer,
    a decimal, a fraction or a LaTeX expression (:func:`normalise_answer`).
    """
    found = locate_answer(fold_text(completion))
    return None if found is None else found[0]


def is_correct(completion: str, reference_answer: str) -> bool:
    """Whether the completion's final answer equals the reference (after normalisation)."""
    predicted = extract_answer(completion)
    reference = normalise_answer(reference_answer)
    return predicted is not None and predicted == reference


def follows_format(completion: str) -> bool:
    """Whether the completion is one rationale line then exactly ``answer: X`` at the end.

    An integer is written ``-?\\d+`` (no ``+``, separators, ``$`` or full stop); any other
    answer must read as one (:func:`normalise_answer`)."""
    match = _FORMAT_RE.match(fold_text(completion))
    if match is None:
        return False
    written = match.group(1)
    value = normalise_answer(written)
    if value is not None and re.fullmatch(r"-?\d+", value):
        return bool(re.fullmatch(r"-?\d+", written))
    return value is not None


def normalise_question(question: str) -> str:
    """Canonical form used to match a question against a client's local answer table.

    Case-folded, NFKC, look-alikes folded, the ``Q:`` prompt scaffolding removed and all
    whitespace dropped around operators, so ``'Q: 27 + 48'`` and ``'27+48'`` match.
    """
    text = fold_text(question).casefold().strip()
    if text.startswith("q:"):
        text = text[2:]
    text = text.split("\na:")[0]
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s*([^\w\s])\s*", r"\1", text)
    return text.rstrip("?=").strip()


def make_prompt(question: str) -> str:
    """The prompt a model is given for a question (completions continue after ``A:``)."""
    return f"{QUESTION_PREFIX}{question}{ANSWER_CUE}"


def make_completion(rationale: str, answer: str) -> str:
    """A well-formatted completion (leading space, rationale line, answer line)."""
    return f" {rationale}\n{ANSWER_PREFIX} {answer}"
