"""Arithmetic and digit-manipulation domains with a worked rationale.

Each domain enumerates a finite space of problems; item ``i`` of the space is a pure
function of ``i``, so splits are drawn by shuffling indices with a seeded generator and are
disjoint by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedgrpo.edge.answer_format import make_completion, make_prompt


@dataclass(frozen=True)
class TaskItem:
    """One labelled problem: the question, its worked rationale and the final answer."""

    domain: str
    question: str
    rationale: str
    answer: str

    @property
    def prompt(self) -> str:
        return make_prompt(self.question)

    @property
    def completion(self) -> str:
        return make_completion(self.rationale, self.answer)


@dataclass(frozen=True)
class Domain:
    """A named problem family: ``space_size`` problems, ``make(i)`` builds problem ``i``."""

    name: str
    description: str
    space_size: int
    make: Callable[[int], TaskItem]


def _addition(i: int) -> TaskItem:
    a, b = 10 + i // 90, 10 + i % 90
    ones = a % 10 + b % 10
    carry = ones // 10
    tens = a // 10 + b // 10 + carry
    rationale = f"{a % 10}+{b % 10}={ones},{a // 10}+{b // 10}+{carry}={tens}"
    return TaskItem("add", f"{a}+{b}", rationale, str(a + b))


def _subtraction_pairs() -> list[tuple[int, int]]:
    return [(a, b) for a in range(10, 100) for b in range(10, a + 1)]


_SUB_PAIRS = _subtraction_pairs()


def _subtraction(i: int) -> TaskItem:
    a, b = _SUB_PAIRS[i]
    a1, a10, b1, b10 = a % 10, a // 10, b % 10, b // 10
    if a1 >= b1:
        rationale = f"{a1}-{b1}={a1 - b1},{a10}-{b10}={a10 - b10}"
    else:
        rationale = f"1{a1}-{b1}={10 + a1 - b1},{a10}-1-{b10}={a10 - 1 - b10}"
    return TaskItem("sub", f"{a}-{b}", rationale, str(a - b))


def _multiplication(i: int) -> TaskItem:
    a, b = 2 + i // 90, 10 + i % 90
    low = a * (b % 10)
    high = a * (b // 10) + low // 10
    rationale = f"{a}*{b % 10}={low},{a}*{b // 10}+{low // 10}={high}"
    return TaskItem("mul", f"{a}*{b}", rationale, str(a * b))


def _modulo(i: int) -> TaskItem:
    a, b = 10 + i // 8, 2 + i % 8
    q = a // b
    rationale = f"{b}*{q}={b * q},{a}-{b * q}={a - b * q}"
    return TaskItem("mod", f"{a}%{b}", rationale, str(a % b))


def _four_nonzero_digits(i: int) -> str:
    digits = []
    for _ in range(4):
        digits.append(str(1 + i % 9))
        i //= 9
    return "".join(digits)


def _reversal(i: int) -> TaskItem:
    n = _four_nonzero_digits(i)
    rev = n[::-1]
    return TaskItem("rev", f"rev {n}", ",".join(rev), rev)


def _sorting(i: int) -> TaskItem:
    n = _four_nonzero_digits(i)
    ordered = "".join(sorted(n))
    return TaskItem("sort", f"sort {n}", ",".join(ordered), ordered)


DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in (
        Domain("add", "two-digit addition with carry", 90 * 90, _addition),
        Domain("sub", "two-digit subtraction with borrow", len(_SUB_PAIRS), _subtraction),
        Domain("mul", "one-digit times two-digit", 8 * 90, _multiplication),
        Domain("mod", "two-digit modulo one-digit", 90 * 8, _modulo),
        Domain("rev", "reverse four digits", 9**4, _reversal),
        Domain("sort", "sort four digits ascending", 9**4, _sorting),
    )
}


def get_domain(name: str) -> Domain:
    """The domain called ``name``; a clear error lists the known ones otherwise."""
    from fedgrpo.errors import ConfigError

    try:
        return DOMAINS[name]
    except KeyError:
        known = ", ".join(DOMAINS)
        raise ConfigError(f"unknown domain {name!r}; known domains: {known}") from None
