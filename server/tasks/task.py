"""The task plug-in interface: what the trainer, the rewards, the zoo and the evaluation need
to know about a task, and the built-in synthetic arithmetic as one implementation of it.

A task supplies

* **questions, reference answers and domain labels** — :class:`~.domains.TaskItem` objects
  (``question``, ``rationale``, ``answer``, ``domain``), split into a
  :class:`~.suite.TaskSuite` (train / test / auxiliary pool per domain) by
  :meth:`Task.build_suite`;
* **answer extraction** (:meth:`Task.extract_answer`), the **checker**
  (:meth:`Task.is_correct`) and the **format check** (:meth:`Task.follows_format`), used by
  the server for evaluation, the central baseline and the ground-truth sample accuracy;
* a **slip** (:meth:`Task.misconceive`): the wrong answer a careless solver gives, which the
  zoo uses to pre-train a server base with misconceptions and confidently wrong experts.

Clients score on the device with the one answer format of :mod:`fedgrpo.edge.answer_format`
(``rationale`` line, then ``answer: X``, X an integer, decimal, fraction or LaTeX expression
in one canonical form); the server-side checks of
:class:`ItemTask` are those same functions, so a client's answer-table reward and the
server's checker agree bit for bit. A plug-in may override the checker (e.g. a tolerance) but
then only the server side (evaluation, central baseline) uses it.

To bring your own task, subclass :class:`ItemTask`, implement :meth:`ItemTask.items` and
register it (:func:`fedgrpo.server.tasks.registry.register_task`); a scenario then names it
under ``tasks.source`` (see the README, *Bring your own tasks*).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fedgrpo.edge.answer_format import (
    extract_answer,
    follows_format,
    is_correct,
    normalise_answer,
    normalise_question,
)
from fedgrpo.edge.answer_math import canonical_number, number_value
from fedgrpo.errors import DatasetError
from fedgrpo.server.tasks.domains import TaskItem
from fedgrpo.server.tasks.suite import DomainSplits, TaskSuite, build_suite


@dataclass(frozen=True)
class SplitSizes:
    """Per-domain split sizes (``tasks.train_per_domain`` etc.; train is a cap, None = all)."""

    train_per_domain: int | None = 2000
    test_per_domain: int = 200
    aux_pool_per_domain: int = 100


@runtime_checkable
class Task(Protocol):
    """What every consumer of a task relies on (see the module docstring)."""

    name: str

    def build_suite(
        self, domains: Sequence[str], sizes: SplitSizes, seed: int
    ) -> TaskSuite: ...

    def extract_answer(self, completion: str) -> str | None: ...

    def is_correct(self, completion: str, reference_answer: str) -> bool: ...

    def follows_format(self, completion: str) -> bool: ...

    def misconceive(self, item: TaskItem) -> TaskItem: ...


class NumericAnswers:
    """Answer extraction, checker and format check of the shared edge answer format."""

    def extract_answer(self, completion: str) -> str | None:
        return extract_answer(completion)

    def is_correct(self, completion: str, reference_answer: str) -> bool:
        return is_correct(completion, reference_answer)

    def follows_format(self, completion: str) -> bool:
        return follows_format(completion)


class ArithmeticTask(NumericAnswers):
    """The built-in synthetic domains (``server.tasks.domains``); splits exactly as
    :func:`~.suite.build_suite` always drew them, slips from ``server.tasks.misconceptions``."""

    name = "arithmetic"

    def build_suite(self, domains: Sequence[str], sizes: SplitSizes, seed: int) -> TaskSuite:
        return build_suite(
            tuple(domains),
            seed=seed,
            train_per_domain=sizes.train_per_domain,
            test_per_domain=sizes.test_per_domain,
            aux_pool_per_domain=sizes.aux_pool_per_domain,
        )

    def misconceive(self, item: TaskItem) -> TaskItem:
        from fedgrpo.server.tasks.misconceptions import misconceive

        return misconceive(item)


ARITHMETIC = ArithmeticTask()


def numeric_slip(item: TaskItem) -> TaskItem:
    """A generic slip for any answer: a number becomes one more than the truth, any other
    expression ``X`` becomes ``X+1`` (the rationale is kept, so the slipped and the correct
    solution differ only in the final answer)."""
    value = normalise_answer(item.answer)
    if value is None:
        return item
    number = number_value(value)
    slipped = canonical_number(str(number + 1)) if number is not None else f"{value}+1"
    return TaskItem(item.domain, item.question, item.rationale, slipped or f"{value}+1")


class ItemTask(NumericAnswers):
    """Base class for a task given as a finite list of labelled items.

    Implement :meth:`items`; the seeded, per-domain, disjoint split, the numeric checker and
    the generic slip come with the class. ``source`` names the data in error messages.
    """

    name: str = "items"
    source: str = "task"

    def items(self) -> Iterable[TaskItem]:
        raise NotImplementedError(f"{type(self).__name__} must implement items()")

    def misconceive(self, item: TaskItem) -> TaskItem:
        return numeric_slip(item)

    def build_suite(self, domains: Sequence[str], sizes: SplitSizes, seed: int) -> TaskSuite:
        return split_items(list(self.items()), domains, sizes, seed, self.source, task=self)


def _unique_by_domain(items: Sequence[TaskItem], source: str) -> dict[str, list[TaskItem]]:
    """Items grouped by domain, a question repeated (after normalisation) kept once, so the
    splits can never share a question; an item without a question or answer is an error."""
    seen: set[str] = set()
    by_domain: dict[str, list[TaskItem]] = defaultdict(list)
    for k, item in enumerate(items):
        if not item.question.strip() or not str(item.answer).strip():
            raise DatasetError(f"{source}: item {k} has an empty question or answer")
        key = normalise_question(item.question)
        if key in seen:
            continue
        seen.add(key)
        by_domain[item.domain].append(item)
    return by_domain


def split_items(
    items: Sequence[TaskItem],
    domains: Sequence[str],
    sizes: SplitSizes,
    seed: int,
    source: str,
    task: Task | None = None,
) -> TaskSuite:
    """Disjoint test / auxiliary / train splits per domain, a pure function of the items and
    ``seed``. ``domains`` keeps only those (all, sorted, when empty). Test and auxiliary items
    are drawn first, so changing the train cap never moves them; every domain must keep at
    least one training item."""
    by_domain = _unique_by_domain(items, source)
    if not by_domain:
        raise DatasetError(f"{source}: no items; the task needs at least one labelled question")
    names = tuple(domains) or tuple(sorted(by_domain))
    missing = [d for d in names if d not in by_domain]
    if missing:
        raise DatasetError(
            f"{source}: no items of domain(s) {', '.join(map(repr, missing))}; the data has "
            f"{', '.join(sorted(by_domain))} (tasks.domains)"
        )
    held_out = sizes.test_per_domain + sizes.aux_pool_per_domain
    splits: dict[str, DomainSplits] = {}
    for name in names:
        pool = by_domain[name]
        if held_out >= len(pool):
            raise DatasetError(
                f"{source}: domain {name!r} has {len(pool)} distinct questions but test "
                f"({sizes.test_per_domain}) + aux ({sizes.aux_pool_per_domain}) take {held_out}, "
                "leaving an empty train split; lower tasks.test_per_domain / "
                "tasks.aux_pool_per_domain or add items"
            )
        shuffled = list(pool)
        random.Random(f"{seed}:{name}").shuffle(shuffled)
        cap = sizes.train_per_domain
        train = shuffled[held_out:] if cap is None else shuffled[held_out : held_out + cap]
        splits[name] = DomainSplits(
            test=tuple(shuffled[: sizes.test_per_domain]),
            aux_pool=tuple(shuffled[sizes.test_per_domain : held_out]),
            train=tuple(train),
        )
    return TaskSuite(domains=names, seed=seed, splits=splits, task=task or ARITHMETIC)
