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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgrpo.errors import MissingExtraError, RunDirError
from fedgrpo.experiments.records import RunData
from fedgrpo.experiments.records import load_run as _load_run_data
from fedgrpo.scenarios.fields import ScenarioError
from fedgrpo.scenarios.schema import Scenario

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from fedgrpo.experiments.sweep import SweepResult

__all__ = ["RunResult", "SweepRuns", "load_run", "run_scenario", "sweep"]

#: a scenario: a YAML path, a shipped scenario's name ("quickstart"), a raw mapping or a
#: validated Scenario
ScenarioLike = str | os.PathLike[str] | Mapping[str, Any] | Scenario
#: overrides: ``{"round_policy.deadline_s": 5}`` or ``["round_policy.deadline_s=5"]`` (``--set``)
Overrides = Mapping[str, Any] | Sequence[str] | None
PathLike = str | os.PathLike[str]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - pandas comes with the server extra
        raise MissingExtraError("server", "pandas") from exc
    return pandas


def _frame(records: Sequence[Mapping[str, Any]], fill_prefix: str | None = None) -> pd.DataFrame:
    """Records as a DataFrame: nested mappings become dotted columns (``accuracy.add``),
    lists stay lists; NaN in ``fill_prefix*`` columns (counts never recorded) becomes 0."""
    pd = _pandas()
    if not records:
        return pd.DataFrame()
    df = pd.json_normalize([dict(r) for r in records], sep=".").drop(
        columns=["event"], errors="ignore"
    )
    if fill_prefix is not None:
        cols = [c for c in df.columns if c.startswith(fill_prefix)]
        df[cols] = df[cols].fillna(0).astype("int64")
    return df


@dataclass
class RunResult:
    """One run directory, read back: its summary, resolved config and records.

    ``metrics`` and ``evals`` are built on access from the records loaded at creation
    (:meth:`reload` re-reads the directory, e.g. while a run is still going)."""

    data: RunData

    @property
    def run_dir(self) -> Path:
        """The run directory (``OUT/<scenario>/<timestamp>``)."""
        return self.data.path

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` (completed from the metrics when the run died before writing it):
        status, rounds_completed, initial/final/best_mean_accuracy, wall_s, virtual_s, bytes…"""
        return self.data.summary

    @property
    def status(self) -> str:
        """``finished``, ``interrupted``, ``failed`` or ``incomplete`` (no summary.json)."""
        return str(self.data.summary.get("status"))

    @property
    def config(self) -> dict[str, Any]:
        """The resolved scenario (``scenario.yaml``: every default spelled out) as a dict."""
        return self.data.config

    @property
    def scenario(self) -> Scenario:
        """The resolved scenario, validated (``fedgrpo run --resume`` reads the same file)."""
        from fedgrpo.scenarios.loader import load_run_scenario

        return load_run_scenario(self.run_dir)

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per round (the ``round`` records of ``metrics.jsonl``): ``round``,
        ``time_s``, ``duration_s``, ``asked``, ``answered``, ``coverage``, ``loss``,
        ``reward_mean``, bytes, and ``participation.<profile>`` (answered requests; 0 where
        a profile answered none)."""
        return _frame(self.data.rounds, fill_prefix="participation.")

    @property
    def evals(self) -> pd.DataFrame:
        """One row per evaluation: ``round``, ``time_s``, ``mean_accuracy``,
        ``accuracy.<domain>``, ``format_rate`` and ``correct_items`` (a list of 0/1 per test
        item, in order)."""
        return _frame(self.data.evals)

    @property
    def participation(self) -> pd.DataFrame:
        """Per device profile, the requests it answered as a share of all requests asked in
        the run (index ``profile``, column ``share``; the ``not answered`` row is the rest).
        The shares sum to 1; the participation plot draws this."""
        from fedgrpo.experiments.plots import participation_shares

        shares, asked = participation_shares(self.data.rounds)
        df = _pandas().DataFrame({"share": shares}).rename_axis("profile")
        df.attrs["asked"] = asked
        return df

    @property
    def clock(self) -> str:
        """Which clock ``time_s`` runs on: ``virtual`` (sim), ``wall`` (emulate, live)."""
        from fedgrpo.experiments.records import time_clock

        return time_clock(self.data.mode)

    def plot_accuracy(self, x: str = "round") -> Figure | None:
        """Accuracy vs ``"round"`` or ``"time"`` (:func:`fedgrpo.experiments.plots.accuracy_figure`)."""
        from fedgrpo.experiments.plots import accuracy_figure

        return accuracy_figure([self.data], x)

    def plot_participation(self) -> Figure | None:
        """Shares of the asked requests answered per device profile."""
        from fedgrpo.experiments.plots import participation_figure

        return participation_figure([self.data])

    def reload(self) -> RunResult:
        """The same run directory, read again."""
        return load_run(self.run_dir)

    def __repr__(self) -> str:
        s = self.summary
        return (
            f"RunResult({str(self.run_dir)!r}, status={s.get('status')!r}, "
            f"rounds={s.get('rounds_completed')}, "
            f"final_mean_accuracy={s.get('final_mean_accuracy')})"
        )


def load_run(run_dir: PathLike) -> RunResult:
    """Read an existing run directory (from ``fedgrpo run``, a sweep, or :func:`run_scenario`).

    Works on finished, interrupted, failed and crashed runs (a crashed run's summary is
    derived from its metrics). Raises :class:`~fedgrpo.errors.RunDirError` when the directory
    is missing or holds no run records."""
    try:
        return RunResult(_load_run_data(run_dir))
    except FileNotFoundError as exc:
        raise RunDirError(f"{exc}; give a directory written by `fedgrpo run` or a sweep") from None


# --------------------------------------------------------------------------- scenarios


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


# --------------------------------------------------------------------------- sweeps


@dataclass
class SweepRuns:
    """A finished sweep: its directory and one :class:`RunResult` per variant.

    ``frame`` is the tidy table (one row per grid point x seed); ``points`` the per-point
    mean ± std that ``comparison.csv`` holds; ``metrics`` every variant's round records
    stacked, with the grid keys and the seed as columns."""

    sweep_dir: Path
    keys: list[str]
    result: SweepResult
    runs: dict[str, RunResult] = field(default_factory=dict)
    metric: str = "final_mean_accuracy"

    @property
    def failed(self) -> list[str]:
        """Names of the variants that failed (their error is in ``frame.error``)."""
        return [r.variant.name for r in self.result.failed]

    def _ids(self) -> list[dict[str, Any]]:
        return [
            {"variant": r.variant.name, **r.variant.point, "seed": r.variant.seed}
            for r in self.result.results
        ]

    @property
    def frame(self) -> pd.DataFrame:
        """One row per variant: ``variant``, the grid keys, ``seed``, ``status`` (``ok`` or
        ``failed``), every scalar of the run's summary (``final_mean_accuracy``, ``wall_s``,
        …), ``run_dir`` and ``error`` (first line; empty when ok)."""
        rows = []
        for ids, r in zip(self._ids(), self.result.results):
            run = self.runs.get(r.variant.name)
            summary = run.summary if run is not None else r.summary
            scalars = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
            scalars.pop("status", None)
            rows.append({**ids, "status": r.status, **scalars, "run_dir": str(r.run_dir),
                         "error": r.error.splitlines()[0] if r.error else ""})  # fmt: skip
        return _pandas().DataFrame(rows)

    @property
    def points(self) -> pd.DataFrame:
        """One row per grid point (seeds grouped): ok / failed counts and the mean and std of
        the sweep's metric (``comparison.csv``)."""
        from fedgrpo.experiments.sweep import point_rows

        return _pandas().DataFrame(point_rows(self.result.results, self.keys, self.metric))

    def _stacked(self, what: str) -> pd.DataFrame:
        pd = _pandas()
        parts = []
        for ids in self._ids():
            run = self.runs.get(ids["variant"])
            df = getattr(run, what) if run is not None else pd.DataFrame()
            if len(df):
                parts.append(df.assign(**ids))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    @property
    def metrics(self) -> pd.DataFrame:
        """Every variant's per-round records (:attr:`RunResult.metrics`) in one frame, with
        ``variant``, the grid keys and ``seed`` columns (failed variants' rounds included)."""
        return self._stacked("metrics")

    @property
    def evals(self) -> pd.DataFrame:
        """Every variant's evaluations (:attr:`RunResult.evals`), stacked like :attr:`metrics`."""
        return self._stacked("evals")


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
    runs = {}
    for r in result.results:
        with contextlib.suppress(RunDirError):  # a variant that failed before its first record
            runs[r.variant.name] = load_run(r.run_dir)
    return SweepRuns(result.sweep_dir, list(checked), result, runs, metric)
