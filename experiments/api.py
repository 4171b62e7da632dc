"""The Python API: one run, a sweep, or a finished run, as pandas-friendly result objects.

::

    from fedgrpo import run_scenario, sweep, load_run

    result = run_scenario("quickstart", overrides={"rounds": 10}, out="runs")
    result.summary["final_mean_accuracy"]     # summary.json, as a dict
    result.metrics                             # one row per round (a pandas DataFrame)
    result.evals                               # one row per evaluation
    grid = sweep("quickstart", {"selection.selector": ["confidence_graph", "random"]}, seeds=2)
    grid.frame                                 # one row per variant (grid point x seed)

:func:`run_scenario` does what ``fedgrpo run`` does — validate (field, cross-field and this
machine's checks), create ``OUT/<scenario>/<timestamp>/`` with the resolved ``scenario.yaml``,
run :func:`fedgrpo.experiments.runner.run_scenario`, draw the plots — and :func:`sweep` what
``fedgrpo sweep`` does (:func:`fedgrpo.experiments.sweep.run_sweep`); nothing here runs a
round itself. :func:`load_run` reads any run directory (:func:`fedgrpo.experiments.records.load_run`).
The result objects, :class:`RunResult` and :class:`SweepRuns`, live in
:mod:`fedgrpo.experiments.results`.
Bad input raises :class:`~fedgrpo.scenarios.fields.ScenarioError` (a scenario problem, naming
the field) or :class:`~fedgrpo.errors.RunDirError` (not a run directory).

``import fedgrpo`` stays light: the package re-exports these names lazily, so nothing of the
server side (pydantic, torch, pandas) is imported until one of them is used.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fedgrpo.experiments.results import RunResult, SweepRuns, load_run, load_variants
from fedgrpo.scenarios.fields import ScenarioError
from fedgrpo.scenarios.schema import Scenario

__all__ = ["RunResult", "SweepRuns", "load", "load_run", "run_scenario", "sweep"]

#: a scenario: a YAML path, a shipped scenario's name ("quickstart"), a raw mapping or a
#: validated Scenario
ScenarioLike = str | os.PathLike[str] | Mapping[str, Any] | Scenario
#: overrides: ``{"round_policy.deadline_s": 5}`` or ``["round_policy.deadline_s=5"]`` (``--set``)
Overrides = Mapping[str, Any] | Sequence[str] | None
PathLike = str | os.PathLike[str]


def _raw_scenario(scenario: ScenarioLike, overrides: Overrides, seed: int | None) -> dict[str, Any]:
    """The scenario as a raw mapping with ``overrides`` and ``seed`` applied (not validated)."""
    from fedgrpo.scenarios.loader import load_raw, scenario_file, scenario_to_dict
    from fedgrpo.scenarios.overrides import apply_override, apply_overrides

    if isinstance(scenario, Scenario):
        data = copy.deepcopy(scenario_to_dict(scenario))
    elif isinstance(scenario, Mapping):
        data = copy.deepcopy(dict(scenario))
    elif isinstance(scenario, (str, os.PathLike)):
        data = load_raw(scenario_file(scenario))
    else:
        raise ScenarioError([
            f"scenario: {type(scenario).__name__} is not a scenario; give a YAML path, a "
            "shipped scenario's name (e.g. 'quickstart'), a mapping or a Scenario"
        ])  # fmt: skip
    if isinstance(overrides, Mapping):
        problems: list[str] = []
        for key, value in overrides.items():
            try:
                apply_override(data, str(key), copy.deepcopy(value))
            except ScenarioError as exc:
                problems += exc.problems
        if problems:
            raise ScenarioError(problems)
    elif overrides is not None:
        if isinstance(overrides, str):
            raise ScenarioError([
                f"overrides={overrides!r}: give a list of KEY=VALUE strings or a mapping"
            ])  # fmt: skip
        apply_overrides(data, list(overrides))
    if seed is not None:
        data["seed"] = seed
    return data


def _source(scenario: ScenarioLike) -> str:
    if isinstance(scenario, (str, os.PathLike)):
        return str(scenario)
    return "<Scenario>" if isinstance(scenario, Scenario) else "<dict>"


def load(scenario: ScenarioLike, overrides: Overrides = None, seed: int | None = None) -> Scenario:
    """Validate ``scenario`` with ``overrides`` and this machine's checks (a local model path
    that does not exist, an unset ``token_env``), as ``fedgrpo run`` does before it starts;
    every problem in one :class:`ScenarioError`."""
    from fedgrpo.scenarios.checks import environment_errors
    from fedgrpo.scenarios.loader import validate_dict

    source = _source(scenario)
    s = validate_dict(_raw_scenario(scenario, overrides, seed), source)
    problems = [f"{source}: {path}: {msg}" for path, msg in environment_errors(s)]
    if problems:
        raise ScenarioError(problems)
    return s


@contextlib.contextmanager
def _models_dir(models_dir: PathLike | None) -> Iterator[None]:
    """``FEDGRPO_MODELS_DIR`` set to ``models_dir`` for the call (as ``--models-dir`` does for a
    command; worker processes inherit it), restored afterwards. None: leave it as it is."""
    from fedgrpo.experiments.models_dir import ENV

    if models_dir is None:
        yield
        return
    before = os.environ.get(ENV)
    os.environ[ENV] = str(models_dir)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def run_scenario(
    scenario: ScenarioLike,
    overrides: Overrides = None,
    *,
    out: PathLike = "runs",
    models_dir: PathLike | None = None,
    seed: int | None = None,
    plots: bool | None = None,
) -> RunResult:
    """Run one scenario exactly as ``fedgrpo run`` does and return its result.

    Args:
        scenario: a YAML path, a shipped scenario's name (``"quickstart"``), a raw mapping
            (what a YAML file holds) or a :class:`~fedgrpo.scenarios.schema.Scenario`.
        overrides: ``{"round_policy.deadline_s": 5, "rounds": 10}`` or ``--set`` strings
            (``["rounds=10"]``); applied before validation, like ``--set``.
        out: parent of the run directory ``OUT/<scenario>/<timestamp>/`` (``--out``).
        models_dir: the model cache (``--models-dir``); default ``$FEDGRPO_MODELS_DIR``, else
            ``./models``.
        seed: the run's seed (same as overriding ``seed``).
        plots: draw ``RUN_DIR/plots/`` (default: the scenario's ``outputs.plots``).

    Returns:
        the :class:`RunResult` of the new run directory.

    Raises:
        ScenarioError: a bad scenario or override (every problem, naming the field), or this
            machine lacks what it needs; nothing is created then.
        KeyboardInterrupt: Ctrl-C; the run is checkpointed and ``fedgrpo run --resume
            RUN_DIR`` continues it. An exception inside the run is re-raised after the run
            directory records ``"status": "failed"``.
    """
    from fedgrpo.experiments.report import make_report
    from fedgrpo.experiments.runner import run_scenario as run_in_dir
    from fedgrpo.scenarios.loader import new_run_dir

    with _models_dir(models_dir):
        s = load(scenario, overrides, seed)
        run_dir = new_run_dir(s, out)
        run_in_dir(s, run_dir, False)
        if s.outputs.plots if plots is None else plots:
            make_report([run_dir], run_dir / "plots")
    return load_run(run_dir)


def _grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """``{key: values}`` checked: a non-empty list of values per key."""
    if not isinstance(grid, Mapping) or not grid:
        raise ScenarioError(["grid: give {KEY: [V1, ...]}, e.g. {'sim.dropout.fail': [0, 0.1]}"])
    problems, out = [], {}
    for key, values in grid.items():
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            problems.append(f"grid[{key!r}]: {values!r} is not a list of values; e.g. [0, 0.1]")
        elif not values:
            problems.append(f"grid[{key!r}]: no values; give at least one")
        else:
            out[str(key)] = list(values)
    if problems:
        raise ScenarioError(problems)
    return out


def sweep(
    scenario: ScenarioLike,
    grid: Mapping[str, Sequence[Any]],
    *,
    seeds: int = 1,
    overrides: Overrides = None,
    workers: int = 2,
    out: PathLike = "runs",
    models_dir: PathLike | None = None,
    metric: str = "final_mean_accuracy",
    progress: bool = False,
) -> SweepRuns:
    """Run a grid of variants x seeds exactly as ``fedgrpo sweep`` does.

    Args:
        scenario: as for :func:`run_scenario`; every variant starts from it.
        grid: ``{"sim.dropout.fail": [0, 0.1, 0.3], "round_policy.over_selection": [0, 1]}``;
            the cartesian product is run (values as Python objects, not strings).
        seeds: seeds per grid point, counting up from the scenario's seed.
        overrides: applied to every variant first (like ``--set``).
        workers: parallel worker processes; ``0`` runs the variants in this process.
        out: parent of ``OUT/<scenario>-sweep/<timestamp>/`` (``--out``).
        models_dir: the model cache, passed on to the workers (``--models-dir``).
        metric: the summary key ``comparison.md|csv|png`` and :attr:`SweepRuns.points` compare.
        progress: a progress bar (on a terminal only).

    Returns:
        a :class:`SweepRuns`; a variant that fails is a row with ``status == "failed"`` and
        its error, the others still run.

    Raises:
        ScenarioError: a bad scenario, override or grid value, with the problems of every
            variant at once; nothing runs then.
    """
    from fedgrpo.experiments.sweep import run_sweep

    checked = _grid(grid)
    with _models_dir(models_dir):
        raw = _raw_scenario(scenario, overrides, None)
        raw.setdefault("name", "scenario")  # a file's name defaults to its stem already
        result = run_sweep(raw, checked, seeds=seeds, workers=workers, out_root=out,
                           metric=metric, progress=progress)  # fmt: skip
    return load_variants(result, list(checked), metric)
