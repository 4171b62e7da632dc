"""Tasks: the plug-in interface (``task.py``), the built-in synthetic domains standing in for
the paper's MATH subjects, local dataset files (``dataset.py``) and the registry (pure Python;
``datasets`` is imported only when a dataset file is read)."""

from fedgrpo.server.tasks.domains import DOMAINS, Domain, TaskItem, get_domain
from fedgrpo.server.tasks.registry import TaskSource, register_task, registered_tasks
from fedgrpo.server.tasks.suite import TaskSuite, build_suite
from fedgrpo.server.tasks.task import ARITHMETIC, ArithmeticTask, ItemTask, SplitSizes, Task

__all__ = [
    "ARITHMETIC",
    "DOMAINS",
    "ArithmeticTask",
    "Domain",
    "ItemTask",
    "SplitSizes",
    "Task",
    "TaskItem",
    "TaskSource",
    "TaskSuite",
    "build_suite",
    "get_domain",
    "register_task",
    "registered_tasks",
]
