"""Systematic mistakes per domain: the same worked format, one classic slip.

A *misconception* rewrites a correct item into the answer a careless solver gives: addition
that forgets the carry, subtraction that takes the smaller digit from the larger instead of
borrowing, multiplication that drops the carry into the tens, a modulo whose quotient is one
short, sorting that comes out descending, reversal that copies the digits unchanged. The
rationale keeps the exact shape of the correct one (same separators and positions), so the
two differ only at the step where the slip happens.

Why: a server model pre-trained on a corpus where such slips are common puts most of its
probability on the slip (greedy decoding is wrong) but still samples the correct procedure
often. That is the regime in which reward-only RL is known to work — sharpening what the
model can already sample into what it answers greedily — and experts holding clean data are
exactly what tells the two apart. A client whose own data carries the slip is *confidently
wrong*: it rewards the mistake, which is what expert selection must avoid.

Pure functions of the item; where the slip does not change anything (an addition without a
carry) the item comes back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

from fedgrpo.server.tasks.domains import TaskItem


def _operands(question: str, op: str) -> tuple[int, int]:
    left, right = question.split(op)
    return int(left), int(right)


def _add(item: TaskItem) -> TaskItem:
    a, b = _operands(item.question, "+")
    ones = a % 10 + b % 10
    tens = a // 10 + b // 10
    rationale = f"{a % 10}+{b % 10}={ones},{a // 10}+{b // 10}+0={tens}"
    return TaskItem(item.domain, item.question, rationale, str(tens * 10 + ones % 10))


def _sub(item: TaskItem) -> TaskItem:
    a, b = _operands(item.question, "-")
    a1, a10, b1, b10 = a % 10, a // 10, b % 10, b // 10
    if a1 >= b1:
        return item
    rationale = f"{b1}-{a1}={b1 - a1},{a10}-{b10}={a10 - b10}"
    return TaskItem(item.domain, item.question, rationale, str(10 * (a10 - b10) + b1 - a1))


def _mul(item: TaskItem) -> TaskItem:
    a, b = _operands(item.question, "*")
    low = a * (b % 10)
    high = a * (b // 10)
    rationale = f"{a}*{b % 10}={low},{a}*{b // 10}+0={high}"
    return TaskItem(item.domain, item.question, rationale, str(high * 10 + low % 10))


def _mod(item: TaskItem) -> TaskItem:
    a, b = _operands(item.question, "%")
    q = a // b - 1
    rationale = f"{b}*{q}={b * q},{a}-{b * q}={a - b * q}"
    return TaskItem(item.domain, item.question, rationale, str(a - b * q))


def _sort(item: TaskItem) -> TaskItem:
    digits = item.question.split()[1]
    ordered = "".join(sorted(digits, reverse=True))
    return TaskItem(item.domain, item.question, ",".join(ordered), ordered)


def _rev(item: TaskItem) -> TaskItem:
    digits = item.question.split()[1]
    return TaskItem(item.domain, item.question, ",".join(digits), digits)


MISCONCEPTIONS: dict[str, Callable[[TaskItem], TaskItem]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "mod": _mod,
    "sort": _sort,
    "rev": _rev,
}


def misconceive(item: TaskItem) -> TaskItem:
    """``item`` as its domain's classic slip would solve it (unchanged where the slip is moot)."""
    return MISCONCEPTIONS[item.domain](item)
