"""Greedy pass@1 accuracy of models on every domain's held-out test split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedgrpo.server.generation import SamplingParams, generate
from fedgrpo.server.tasks import ARITHMETIC, Task, TaskItem, TaskSuite

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class EvalResult:
    accuracy: dict[str, float]  # per domain
    format_rate: float
    n_per_domain: dict[str, int]
    # per evaluated item, in order: was the greedy answer correct / in the answer format
    correct: tuple[bool, ...] = ()
    formatted: tuple[bool, ...] = ()

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / max(1, len(self.accuracy))

    @property
    def accuracy_given_format(self) -> float | None:
        """Accuracy among answers in the answer format: separates reasoning from formatting."""
        n = sum(self.formatted)
        if not n:
            return None
        return sum(c for c, f in zip(self.correct, self.formatted) if f) / n

    def to_dict(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "mean_accuracy": self.mean_accuracy,
            "format_rate": self.format_rate,
            "accuracy_given_format": self.accuracy_given_format,
            "n_per_domain": self.n_per_domain,
        }


def evaluate_items(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[TaskItem],
    max_new_tokens: int = 40,
    task: Task = ARITHMETIC,
) -> EvalResult:
    """Greedy pass@1 with ``task``'s checker and format check."""
    texts, _, _ = generate(
        model, tokenizer, [i.prompt for i in items], SamplingParams(max_new_tokens, temperature=0.0)
    )
    flags = tuple(task.is_correct(text, item.answer) for item, text in zip(items, texts))
    formatted = tuple(task.follows_format(t) for t in texts)
    correct: dict[str, int] = {}
    counts: dict[str, int] = {}
    for item, ok in zip(items, flags):
        counts[item.domain] = counts.get(item.domain, 0) + 1
        correct[item.domain] = correct.get(item.domain, 0) + int(ok)
    return EvalResult(
        accuracy={d: correct[d] / counts[d] for d in counts},
        format_rate=sum(formatted) / max(1, len(texts)),
        n_per_domain=counts,
        correct=flags,
        formatted=formatted,
    )


def evaluate_on_suite(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    suite: TaskSuite,
    per_domain: int | None = None,
) -> EvalResult:
    items = [i for d in suite.domains for i in suite.test(d)[:per_domain]]
    return evaluate_items(model, tokenizer, items, task=suite.task)


def format_table(results: dict[str, EvalResult], domains: Sequence[str]) -> str:
    """A plain-text table: one row per model, one column per domain, plus mean and format."""
    header = ["model", *domains, "mean", "format"]
    rows = [header]
    for name, res in results.items():
        rows.append(
            [name]
            + [f"{res.accuracy.get(d, float('nan')):.2f}" for d in domains]
            + [f"{res.mean_accuracy:.2f}", f"{res.format_rate:.2f}"]
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
