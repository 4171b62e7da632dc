"""Tasks from local dataset files (JSONL, JSON, CSV, Parquet) read with the ``datasets``
library's local loaders — nothing is ever downloaded.

:class:`DatasetSpec` says where the file is, its layout (``gsm8k``, ``math``, ``qa``; see
:mod:`.layouts`), which columns hold the question, the answer and the domain (or one fixed
domain). :class:`DatasetTask` turns the rows into :class:`~.domains.TaskItem` objects and
splits them like any :class:`~.task.ItemTask`. Every problem raises
:class:`fedgrpo.errors.DatasetError` naming the file, the row and the field (its ``field`` is
the ``tasks.source`` key to fix), never a traceback from the loader.

``sample:NAME`` names a sample shipped with the package (``server/tasks/data/``):
``sample:gsm8k`` (JSONL), ``sample:math`` (Parquet), ``sample:qa`` (CSV).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from fedgrpo.errors import DatasetError
from fedgrpo.server.tasks.domains import TaskItem
from fedgrpo.server.tasks.layouts import (
    DEFAULT_FIELDS,
    LAYOUTS,
    LayoutError,
    gsm8k_answer,
    math_answer,
    qa_answer,
)
from fedgrpo.server.tasks.task import ItemTask

SAMPLE_PREFIX = "sample:"
# file suffix -> the datasets packaged builder that reads it
BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
FORMATS = ("auto", "json", "csv", "parquet")


def _error(message: str, field: str) -> DatasetError:
    return DatasetError(message, field)  # field: the tasks.source key to fix


def samples() -> dict[str, Path]:
    """The shipped sample files by name (``gsm8k``, ``math``, ``qa``)."""
    root = files("fedgrpo.server.tasks") / "data"
    return {
        Path(e.name).stem: Path(str(e))
        for e in root.iterdir()
        if Path(e.name).suffix in BUILDERS
    }


def resolve_data_path(path: str) -> Path:
    """``sample:NAME`` -> the shipped file; anything else a local path (relative to the
    working directory, like local model paths)."""
    if path.startswith(SAMPLE_PREFIX):
        name = path[len(SAMPLE_PREFIX) :]
        known = samples()
        if name not in known:
            raise _error(
                f"{path!r} is not a shipped sample; known: "
                + ", ".join(SAMPLE_PREFIX + n for n in sorted(known)),
                "path",
            )
        return known[name]
    return Path(path).expanduser()


@dataclass(frozen=True)
class DatasetSpec:
    """One local dataset file and how to read it (``tasks.source`` in a scenario)."""

    path: str
    layout: str = "qa"
    format: str = "auto"
    question_field: str | None = None  # default: the layout's (question / problem)
    answer_field: str | None = None  # default: the layout's (answer / solution)
    rationale_field: str | None = None  # qa only: a worked solution column
    domain_field: str | None = None  # the column giving each row's domain
    domain: str | None = None  # one fixed domain (default: the layout's name)
    on_bad_answer: Literal["error", "skip"] = "error"

    @property
    def columns(self) -> tuple[str, str]:
        q, a = DEFAULT_FIELDS.get(self.layout, ("question", "answer"))
        return self.question_field or q, self.answer_field or a

    def builder(self, path: Path) -> str:
        if self.format != "auto":
            return self.format
        if path.suffix.lower() not in BUILDERS:
            raise _error(
                f"{path}: cannot tell the format from the suffix {path.suffix!r}; name the "
                f"file *.jsonl, *.json, *.csv or *.parquet or set tasks.source.format",
                "format",
            )
        return BUILDERS[path.suffix.lower()]


def read_rows(spec: DatasetSpec) -> tuple[Path, list[dict[str, Any]]]:
    """The file's rows through ``datasets.load_dataset(builder, data_files=...)`` (a
    throw-away cache directory, kept in memory: nothing is written to the HF cache)."""
    if spec.layout not in LAYOUTS:
        raise _error(f"layout {spec.layout!r} is unknown; known: {', '.join(LAYOUTS)}", "layout")
    if spec.format not in FORMATS:
        raise _error(f"format {spec.format!r} is unknown; known: {', '.join(FORMATS)}", "format")
    path = resolve_data_path(spec.path)
    if not path.is_file():
        raise _error(f"{path}: file not found (relative to {Path.cwd()})", "path")
    builder = spec.builder(path)
    return path, _load(str(path.resolve()), builder, *_stamp(path))


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=16)
def _load(path: str, builder: str, mtime_ns: int, size: int) -> list[dict[str, Any]]:
    """Rows of one file version (the stamp makes an edited file load afresh)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="fedgrpo-datasets-") as cache:
        try:
            table = datasets.load_dataset(
                builder, data_files=path, split="train", cache_dir=cache, keep_in_memory=True
            )
        except Exception as exc:  # the loaders raise many types; the cause is what helps
            cause = exc.__cause__ or exc
            first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise _error(f"{path}: cannot be read as {builder}: {first[:300]}", "path") from None
        return list(table.to_list())


def _column(rows: list[dict[str, Any]], name: str, field: str, path: Path) -> None:
    have = list(rows[0]) if rows else []
    if name not in have:
        raise _error(
            f"{path}: column {name!r} not found (tasks.source.{field}); the file has "
            f"columns: {', '.join(have) or 'none'}",
            field,
        )


class DatasetTask(ItemTask):
    """A task read from one local dataset file; items in file order, checked as they are
    read. Rows with an unreadable answer are an error, or dropped with ``on_bad_answer:
    skip`` (:attr:`skipped` counts them)."""

    name = "dataset"

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.path, rows = read_rows(spec)
        self.source = str(self.path)
        self.skipped = 0
        self._items = self._parse(rows)

    def items(self) -> Iterable[TaskItem]:
        return list(self._items)

    def _parse(self, rows: list[dict[str, Any]]) -> list[TaskItem]:
        spec, path = self.spec, self.path
        if not rows:
            raise _error(f"{path}: has no rows", "path")
        q_col, a_col = spec.columns
        _column(rows, q_col, "question_field", path)
        _column(rows, a_col, "answer_field", path)
        for col, field in ((spec.domain_field, "domain_field"), (spec.rationale_field, "rationale_field")):
            if col is not None:
                _column(rows, col, field, path)
        items = []
        for number, row in enumerate(rows, start=1):
            item = self._item(row, number, q_col, a_col)
            if item is not None:
                items.append(item)
        if not items:
            raise _error(f"{path}: every row was skipped (unreadable answers); nothing to train on", "on_bad_answer")
        return items

    def _item(self, row: dict[str, Any], number: int, q_col: str, a_col: str) -> TaskItem | None:
        spec, where = self.spec, f"{self.path}: row {number}"
        question = row.get(q_col)
        if not isinstance(question, str) or not question.strip():
            raise _error(f"{where}: column {q_col!r} is empty or not text", "question_field")
        try:
            if spec.layout == "gsm8k":
                rationale, answer = gsm8k_answer(str(row.get(a_col) or ""))
            elif spec.layout == "math":
                rationale, answer = math_answer(str(row.get(a_col) or ""))
            else:
                extra = row.get(spec.rationale_field) if spec.rationale_field else None
                rationale, answer = qa_answer(row.get(a_col), extra)
        except LayoutError as exc:
            if spec.on_bad_answer == "skip":
                self.skipped += 1
                return None
            raise _error(
                f"{where}: column {a_col!r} {exc} (tasks.source.layout: {spec.layout}); fix the row or set "
                "tasks.source.on_bad_answer: skip",
                "answer_field",
            ) from None
        return TaskItem(self._domain(row, where), " ".join(question.split()), rationale, answer)

    def _domain(self, row: dict[str, Any], where: str) -> str:
        spec = self.spec
        if spec.domain_field is None:
            return spec.domain or spec.layout
        value = row.get(spec.domain_field)
        text = "" if value is None else " ".join(str(value).split())
        if not text:
            raise _error(f"{where}: column {spec.domain_field!r} (the domain) is empty", "domain_field")
        return text
