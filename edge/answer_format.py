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

_ANSWER_RE = re.compile(
    r"answer\s*(?:is)?\s*[:=]?\s*[*_`$]*\s*([+-]?\d[\d,]*)", flags=re.IGNORECASE
)
_BOXED_RE = re.compile(r"\\boxed\{\s*([+-]?\d[\d,]*)\s*\}")
_FORMAT_RE = re.compile(r"^\s*[^\n]*\S[^\n]*\nanswer: -?\d+\s*$")


def fold_text(text: str) -> str:
    """NFKC-normalise and fold look-alike characters (full-width digits, minus signs, ×)."""
    return unicodedata.normalize("NFKC", text).translate(_CHAR_FOLDS)


def normalise_answer(answer: str) -> str | None:
    """Canonical form of a numeric answer: no sign for zero, no leading zeros, no separators.

    Returns ``None`` if ``answer`` is not an integer after folding.
    """
    folded = fold_text(answer).strip().replace(",", "").replace("_", "")
    if not re.fullmatch(r"[+-]?\d+", folded):
        return None
    value = int(folded)
    return str(value)


def extract_answer(completion: str) -> str | None:
    """The final answer of a completion, normalised, or ``None`` if there is none.

    Takes the *last* ``answer: N`` (models sometimes restate), tolerates markdown emphasis,
    full-width digits, unicode minus signs, thousands separators and trailing text, and
    falls back to a LaTeX ``\\boxed{N}`` for general-purpose chat models.
    """
    text = fold_text(completion)
    matches = _ANSWER_RE.findall(text)
    if not matches:
        matches = _BOXED_RE.findall(text)
    if not matches:
        return None
    return normalise_answer(matches[-1])


def is_correct(completion: str, reference_answer: str) -> bool:
    """Whether the completion's final answer equals the reference (after normalisation)."""
    predicted = extract_answer(completion)
    reference = normalise_answer(reference_answer)
    return predicted is not None and predicted == reference


def follows_format(completion: str) -> bool:
    """Whether the completion is one rationale line then exactly ``answer: N`` at the end."""
    return bool(_FORMAT_RE.match(fold_text(completion)))


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
