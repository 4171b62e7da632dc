"""Result objects of the Python API (:mod:`fedgrpo.experiments.api`): a run directory or a
sweep read back as pandas DataFrames.

:class:`RunResult` wraps :class:`fedgrpo.experiments.records.RunData` (what ``fedgrpo report``
reads): ``metrics`` (one row per round), ``evals`` (one row per evaluation), ``summary``,
``config``, ``participation`` (shares of the asked requests), ``clock`` and the plots of
:mod:`fedgrpo.experiments.plots`. :class:`SweepRuns` is a sweep: ``frame`` (one row per
variant), ``points`` (per grid point), ``metrics``/``evals`` stacked over the variants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgrpo.errors import MissingExtraError, RunDirError
from fedgrpo.experiments.records import RunData
from fedgrpo.experiments.records import load_run as _load_run_data

if TYPE_CHECKING:
    import os

    import pandas as pd
    from matplotlib.figure import Figure

    from fedgrpo.experiments.sweep import SweepResult
    from fedgrpo.scenarios.schema import Scenario

__all__ = ["RunResult", "SweepRuns", "load_run", "load_variants"]


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


def load_run(run_dir: str | os.PathLike[str]) -> RunResult:
    """Read an existing run directory (from ``fedgrpo run``, a sweep, or :func:`run_scenario`).

    Works on finished, interrupted, failed and crashed runs (a crashed run's summary is
    derived from its metrics). Raises :class:`~fedgrpo.errors.RunDirError` when the directory
    is missing or holds no run records."""
    try:
        return RunResult(_load_run_data(run_dir))
    except FileNotFoundError as exc:
        raise RunDirError(f"{exc}; give a directory written by `fedgrpo run` or a sweep") from None


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


def load_variants(result: SweepResult, keys: Sequence[str], metric: str) -> SweepRuns:
    """A finished :func:`~fedgrpo.experiments.sweep.run_sweep` with each variant's run
    directory read back (a variant that failed before writing a record has none)."""
    runs = {}
    for r in result.results:
        with contextlib.suppress(RunDirError):
            runs[r.variant.name] = load_run(r.run_dir)
    return SweepRuns(result.sweep_dir, list(keys), result, runs, metric)
