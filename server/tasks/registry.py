"""Naming tasks: the registry of task classes and :class:`TaskSource`, the hashable
description of where a run's task comes from (built-in, a dataset file, or a plug-in).

Register a task class under a name, then name it in a scenario::

    from fedgrpo.server.tasks import ItemTask, TaskItem, register_task

    @register_task("parity")
    class Parity(ItemTask):
        def items(self):
            ...

    # scenario: tasks: {source: {kind: plugin, task: my_tasks:Parity}}  (module:Class), or
    #           tasks: {source: {kind: plugin, task: parity, import: my_tasks}}

``module:Class`` imports the module (which may register more), then uses the class.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fedgrpo.errors import DatasetError
from fedgrpo.server.tasks.dataset import DatasetSpec, DatasetTask, resolve_data_path
from fedgrpo.server.tasks.task import ARITHMETIC, ArithmeticTask, SplitSizes, Task

TaskFactory = Callable[..., Task]
_REGISTRY: dict[str, TaskFactory] = {"arithmetic": ArithmeticTask}
F = TypeVar("F", bound=TaskFactory)


def register_task(name: str) -> Callable[[F], F]:
    """Class decorator: make ``name`` usable as ``tasks.source.task`` in a scenario."""

    def add(factory: F) -> F:
        _REGISTRY[name] = factory
        return factory

    return add


def registered_tasks() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DatasetError(
            f"{what}: cannot import module {module!r} ({exc}); put it on PYTHONPATH "
            "(or install it) before running",
            "task",
        ) from None


def task_factory(name: str, module: str | None = None) -> TaskFactory:
    """The class registered as ``name`` (after importing ``module``), or ``module:Class``."""
    if module:
        _import(module, f"task {name!r}")
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        found = getattr(_import(mod_name, f"task {name!r}"), attr, None)
        if found is None or not callable(found):
            raise DatasetError(f"task {name!r}: module {mod_name!r} has no class {attr!r}", "task")
        return found  # type: ignore[no-any-return]
    if name not in _REGISTRY:
        raise DatasetError(
            f"task {name!r} is not registered; registered: {', '.join(registered_tasks())}; "
            "or give module:Class, or import: the module that registers it",
            "task",
        )
    return _REGISTRY[name]


@dataclass(frozen=True)
class TaskSource:
    """Where a run's task comes from. ``options_json`` holds the plug-in's constructor
    keyword arguments as JSON (so the source stays hashable and picklable)."""

    kind: Literal["builtin", "dataset", "plugin"] = "builtin"
    dataset: DatasetSpec | None = None
    task: str | None = None
    module: str | None = None
    options_json: str = "{}"

    def make(self) -> Task:
        return _make(self)

    def fingerprint(self, domains: tuple[str, ...], sizes: SplitSizes, seed: int) -> dict[str, Any]:
        """What determines the task's items, for model-recipe digests: the kind and a hash
        of every split item (so an edited data file gets new models; a moved one does not)."""
        return dict(_fingerprint(self, tuple(domains), sizes, seed, _version(self)))


def _version(source: TaskSource) -> tuple[str, int, int] | None:
    """(file, mtime, size) of a dataset file, so caches see an edited (or another) file."""
    if source.dataset is None:
        return None
    try:
        path = resolve_data_path(source.dataset.path).resolve()
        st = path.stat()
    except (OSError, DatasetError):
        return None  # reading it will raise the clear error
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=64)
def _fingerprint(
    source: TaskSource,
    domains: tuple[str, ...],
    sizes: SplitSizes,
    seed: int,
    version: tuple[str, int, int] | None,
) -> dict[str, Any]:
    suite = source.make().build_suite(domains, sizes, seed)
    blob = json.dumps(
        [
            [name, split, [[i.domain, i.question, i.rationale, i.answer] for i in getattr(s, split)]]
            for name, s in sorted(suite.splits.items())
            for split in ("train", "test", "aux_pool")
        ],
        separators=(",", ":"),
    )
    return {"kind": source.kind, "items_sha256": hashlib.sha256(blob.encode()).hexdigest()}


_made: dict[tuple[TaskSource, tuple[str, int, int] | None], Task] = {}


def _make(source: TaskSource) -> Task:
    """The task object, made once per source in a process (and per version of a dataset
    file, so an edited file is read afresh)."""
    if source.kind == "builtin":
        return ARITHMETIC
    key = (source, _version(source))
    if key not in _made:
        if source.kind == "dataset":
            if source.dataset is None:
                raise DatasetError("tasks.source.kind dataset needs tasks.source.path", "path")
            _made[key] = DatasetTask(source.dataset)
        else:
            _made[key] = _make_plugin(source)
    return _made[key]


PROTOCOL = ("build_suite", "extract_answer", "is_correct", "follows_format", "misconceive")


def _make_plugin(source: TaskSource) -> Task:
    if not source.task:
        raise DatasetError("tasks.source.kind plugin needs tasks.source.task", "task")
    factory = task_factory(source.task, source.module)
    try:
        task = factory(**json.loads(source.options_json))
    except TypeError as exc:
        raise DatasetError(
            f"task {source.task!r}: bad tasks.source.options ({exc})", "options"
        ) from None
    missing = [m for m in PROTOCOL if not callable(getattr(task, m, None))]
    if missing:
        raise DatasetError(
            f"task {source.task!r} lacks {', '.join(missing)}; subclass "
            "fedgrpo.server.tasks.ItemTask (or implement the Task protocol)",
            "task",
        )
    return task
