"""The client's local answer table: its private labelled data, used for AE rewards.

A JSONL file with one ``{"question": ..., "answer": ...}`` per line (extra keys ignored).
Questions are keyed by :func:`normalise_question` so ``'Q: 27 + 48'`` finds ``'27+48'``;
answers are stored normalised so matching is exact and cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from fedgrpo.edge.answer_format import normalise_answer, normalise_question


class AnswerTableError(ValueError):
    """A malformed answer table line (with its line number)."""


class AnswerTable:
    """Normalised question -> normalised answer."""

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._answers: dict[str, str] = {}
        for question, answer in pairs:
            self.add(question, answer)

    def add(self, question: str, answer: str) -> None:
        normalised = normalise_answer(answer)
        if normalised is None:
            raise AnswerTableError(
                f"answer {answer!r} for {question!r} is not an answer the device can read "
                "(an integer, decimal, fraction or LaTeX expression; write words as \\text{...})"
            )
        self._answers[normalise_question(question)] = normalised

    def lookup(self, question: str) -> str | None:
        """The trusted answer for ``question`` (or a normalised duplicate), else ``None``."""
        return self._answers.get(normalise_question(question))

    def __contains__(self, question: object) -> bool:
        return isinstance(question, str) and self.lookup(question) is not None

    def __len__(self) -> int:
        return len(self._answers)

    @classmethod
    def load(cls, path: Path) -> AnswerTable:
        table = cls()
        with Path(path).open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise AnswerTableError(f"{path}:{number}: not JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise AnswerTableError(f"{path}:{number}: expected an object")
                question, answer = row.get("question"), row.get("answer")
                numeric = isinstance(answer, (int, float)) and not isinstance(answer, bool)
                if not isinstance(question, str) or not (isinstance(answer, str) or numeric):
                    raise AnswerTableError(
                        f"{path}:{number}: needs a string 'question' and a string or number 'answer'"
                    )
                try:
                    table.add(question, str(answer))
                except AnswerTableError as exc:
                    raise AnswerTableError(f"{path}:{number}: {exc}") from exc
        return table
