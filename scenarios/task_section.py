"""``tasks.source``: where a scenario's task comes from, and the checks that need its data.

::

    tasks:
      source:
        kind: dataset            # builtin (the synthetic arithmetic) | dataset | plugin
        path: sample:gsm8k       # a local .jsonl/.json/.csv/.parquet file, or a shipped sample
        layout: gsm8k            # gsm8k ('#### N') | math ('\\boxed{N}') | qa (answer column)
        domain_field: topic      # the column giving each row's domain (or domain: NAME)
        split_seed: 0            # the seeded train / test / aux split
      domains: [change, shopping, sharing]   # optional subset; empty = every domain in the data
      train_per_domain: 2000     # the split sizes, per domain, as for the built-in task
      test_per_domain: 4
      aux_pool_per_domain: 4

:func:`check_task_source` relates the keys of the section (run with the other cross-field
checks); :func:`task_data_errors` reads the data (run by ``fedgrpo validate`` and before
``fedgrpo run``) and reports a missing file, column, unreadable answer or empty split with the
``tasks.source`` key to fix. :func:`to_task_source` is the mapping onto
:class:`fedgrpo.server.tasks.TaskSource` (called from :mod:`fedgrpo.scenarios.mapping`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from fedgrpo.scenarios.schema import Scenario
    from fedgrpo.server.tasks import SplitSizes, TaskSource, TaskSuite

Problem = tuple[str, str]
WHERE = "tasks.source"
DATASET_KEYS = (
    "path", "format", "layout", "question_field", "answer_field", "rationale_field",
    "domain_field", "domain", "on_bad_answer",
)  # fmt: skip
PLUGIN_KEYS = ("task", "import_", "options")


class TaskSourceSection(BaseModel):
    """``tasks.source``; mapped onto ``fedgrpo.server.tasks.TaskSource``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)

    kind: Literal["builtin", "dataset", "plugin"] = "builtin"
    # dataset: a local file (relative to the working directory) or sample:gsm8k|math|qa
    path: str | None = None
    format: Literal["auto", "json", "csv", "parquet"] = "auto"
    layout: Literal["gsm8k", "math", "qa"] = "qa"
    # columns; null = the layout's (question/answer for gsm8k and qa, problem/solution for math)
    question_field: str | None = None
    answer_field: str | None = None
    rationale_field: str | None = None  # qa: a worked-solution column (else the answer)
    # each row's domain: a column, or one fixed name (default: the layout's name)
    domain_field: str | None = None
    domain: str | None = None
    # a row whose answer cannot be read (no '#### N', no \boxed{}, not a number or expression)
    on_bad_answer: Literal["error", "skip"] = "error"
    # plugin: a registered task name or module:Class, the module that registers it, and the
    # keyword arguments the class is constructed with
    task: str | None = None
    import_: str | None = Field(None, alias="import")
    options: dict[str, Any] = Field(default_factory=dict)
    # seed of the train / test / aux split (the data stays fixed across run seeds)
    split_seed: int = 0


def check_task_source(s: Scenario) -> list[Problem]:
    """Keys that belong to another kind (set to other than their default: a resolved
    scenario spells every default out), or a kind without what it needs."""
    src = s.tasks.source
    fields = TaskSourceSection.model_fields
    given = {k for k in fields if getattr(src, k) != fields[k].get_default(call_default_factory=True)}
    out: list[Problem] = []
    if src.kind == "dataset" and src.path is None:
        out.append((f"{WHERE}.path", "kind dataset needs the data file: path: FILE or sample:NAME"))
    if src.kind == "plugin" and src.task is None:
        out.append((f"{WHERE}.task", "kind plugin needs task: a registered name or module:Class"))
    foreign = {"builtin": DATASET_KEYS + PLUGIN_KEYS, "dataset": PLUGIN_KEYS, "plugin": DATASET_KEYS}
    for key in foreign[src.kind]:
        if key in given:
            name = "import" if key == "import_" else key
            out.append((f"{WHERE}.{name}", f"is not used with kind {src.kind!r}; remove it"))
    if not s.models_needed and src.kind != "builtin" and not s.tasks.domains:
        out.append(("tasks.domains", "a timing-only run reads no data: list the domains to simulate"))
    if src.domain_field is not None and src.domain is not None:
        out.append((f"{WHERE}.domain", "give either domain_field (a column) or domain (one name)"))
    return out


def to_task_source(section: TaskSourceSection) -> TaskSource:
    from fedgrpo.server.tasks import TaskSource
    from fedgrpo.server.tasks.dataset import DatasetSpec

    dataset = None
    if section.kind == "dataset" and section.path is not None:
        dataset = DatasetSpec(**{k: getattr(section, k) for k in DATASET_KEYS})
    return TaskSource(
        kind=section.kind,
        dataset=dataset,
        task=section.task,
        module=section.import_,
        options_json=json.dumps(section.options, sort_keys=True),
    )


def split_sizes(s: Scenario) -> SplitSizes:
    from fedgrpo.server.tasks import SplitSizes

    t = s.tasks
    return SplitSizes(t.train_per_domain, t.test_per_domain, t.aux_pool_per_domain)


def build_task_suite(s: Scenario) -> TaskSuite:
    """The scenario's task suite (raises DatasetError naming the file and field)."""
    source = to_task_source(s.tasks.source)
    return source.make().build_suite(
        tuple(s.tasks.domains), split_sizes(s), s.tasks.source.split_seed
    )


def task_data_errors(s: Scenario) -> list[Problem]:
    """Read a dataset / plug-in task and report what it lacks, with the key to fix."""
    from fedgrpo.errors import DatasetError

    if s.tasks.source.kind == "builtin" or not s.models_needed:
        return []
    try:
        suite = build_task_suite(s)
    except DatasetError as exc:
        field = exc.field or "path"
        key = "tasks.domains" if "(tasks.domains)" in str(exc) else f"{WHERE}.{field}"
        if "leaving an empty train split" in str(exc):
            key = "tasks.test_per_domain"
        return [(key, str(exc))]
    out: list[Problem] = []
    pool = s.tasks.aux_pool_per_domain * len(suite.domains)
    if s.selection.aux_size > pool:
        out.append(
            (
                "selection.aux_size",
                f"{s.selection.aux_size} is more than the auxiliary pool (tasks.aux_pool_per_domain"
                f" x {len(suite.domains)} domains in the data = {pool}); allowed 1..{pool}",
            )
        )
    for k, doms in enumerate(s.tasks.partition.client_domains or []):
        out += [
            (
                f"tasks.partition.client_domains[{k}]",
                f"{d!r} is not a domain of the data; known: {', '.join(suite.domains)}",
            )
            for d in doms
            if d not in suite.domains
        ]
    return out
