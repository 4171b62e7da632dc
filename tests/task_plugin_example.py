"""A user-defined task, as the README's *Bring your own tasks* example: registered under a
name and named from a scenario (``tasks.source: {kind: plugin, task: digits, import: ...}``)."""

from __future__ import annotations

from collections.abc import Iterator

from fedgrpo.server.tasks import ItemTask, TaskItem, register_task


@register_task("digits")
class DigitTask(ItemTask):
    """Two domains over three-digit numbers: the sum of the digits, the largest digit."""

    def __init__(self, count: int = 200) -> None:
        self.count = count
        self.source = f"digits(count={count})"  # names the task in error messages

    def items(self) -> Iterator[TaskItem]:
        for n in range(100, 100 + self.count):
            a, b, c = (int(d) for d in str(n))
            yield TaskItem("digitsum", f"digitsum {n}", f"{a}+{b}+{c}={a + b + c}", str(a + b + c))
            yield TaskItem("maxdigit", f"maxdigit {n}", f"max {a},{b},{c}", str(max(a, b, c)))
