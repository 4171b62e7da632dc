"""Where, in the raw completion text, the final answer sits (character offsets).

The likelihood reward scores only the answer's tokens, so we need the answer's span in the
*original* string (token offsets refer to it), while :func:`extract_answer` works on folded
text (NFKC, look-alike minus signs...). We fold character by character, remember where each
folded character came from, run the same patterns as ``answer_format`` and map the span back.
"""

from __future__ import annotations

from fedgrpo.edge.answer_format import (  # the one definition of what an answer looks like
    extract_answer,
    fold_text,
    locate_answer,
)


def _fold_with_origins(text: str) -> tuple[str, list[int]]:
    pieces: list[str] = []
    origins: list[int] = []
    for index, char in enumerate(text):
        folded = fold_text(char)
        pieces.append(folded)
        origins.extend([index] * len(folded))
    return "".join(pieces), origins


def answer_span(completion: str) -> tuple[int, int] | None:
    """``(start, end)`` character offsets of the final answer in ``completion``, or ``None``.

    ``None`` when the completion has no extractable answer, or (rare: combining sequences that
    fold differently one character at a time) when the span found does not reproduce
    :func:`extract_answer`'s answer — we never score a span we are unsure of.
    """
    expected = extract_answer(completion)
    if expected is None:
        return None
    folded, origins = _fold_with_origins(completion)
    found = locate_answer(folded)
    if found is None or found[0] != expected or found[2] <= found[1]:
        return None
    return origins[found[1]], origins[found[2] - 1] + 1
