"""Experiment tracking: the run's records mirrored into TensorBoard, MLflow or W&B.

A scenario picks its trackers with ``outputs.loggers: [tensorboard, mlflow, wandb]``. Each is a
:class:`RunLogger` (see :mod:`fedgrpo.experiments.tracking_backends`); :class:`TrackedWriter`
is the run's :class:`~fedgrpo.experiments.records.MetricsWriter` that also forwards every
``round`` and ``eval`` record to them, so the runner has one object to write to.

What each logger receives:

* params: the resolved scenario, flattened to dotted keys (``server.grpo.lr``), once per run;
* metrics at step = round number: ``round/<key>`` for every numeric field of a round record
  (``round/coverage``, ``round/participation.laptop``...), ``eval/<key>`` for evaluations
  (``eval/mean_accuracy``, ``eval/accuracy.add``...). Lists and text are left out.

Crash, Ctrl-C and resume: ``close(status)`` runs from the runner's ``finally``, so every
tracker closes with the run's status (finished / interrupted / failed). Resuming continues
the SAME tracker run with the same step numbers and no step twice: TensorBoard reopens its
directory with ``purge_step`` = the first resumed round (its readers hide the dead run's later
steps); MLflow and W&B, which cannot drop logged points, receive a round only once it is
checkpointed (``commit``), so they never hold a round the resumed run will redo. Their state
(run id, last committed round) is ``RUN_DIR/tracking.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from fedgrpo.experiments.records import MetricsWriter, atomic_write, flatten
from fedgrpo.scenarios.schema import Scenario

TRACKING_JSON = "tracking.json"
STATUSES = ("finished", "interrupted", "failed")


class RunLogger(Protocol):
    """One tracker backend. ``step`` is the round number (0 = the evaluation before round 1)."""

    name: str

    def log_params(self, params: Mapping[str, str | int | float | bool]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def commit(self, through_round: int) -> None:
        """Rounds up to ``through_round`` are checkpointed: safe to make permanent."""
        ...

    def close(self, status: str) -> None: ...


def numeric_metrics(prefix: str, record: Mapping[str, Any]) -> dict[str, float]:
    """``prefix/key`` -> value for every finite number of ``record`` (nested keys dotted)."""
    out: dict[str, float] = {}
    for key, value in flatten(record).items():
        if key in ("event", "round") or isinstance(value, str) or value is None:
            continue
        if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
            out[f"{prefix}/{key}"] = float(value)
    return out


def scenario_params(s: Scenario) -> dict[str, str | int | float | bool]:
    """The resolved scenario as flat params (lists and nulls as their JSON text)."""
    flat = flatten(s.model_dump(mode="json", by_alias=True))
    out: dict[str, str | int | float | bool] = {}
    for key, value in flat.items():
        out[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return out


class TrackingState:
    """``RUN_DIR/tracking.json``: each backend's run id and last committed round."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / TRACKING_JSON
        self.data: dict[str, dict[str, Any]] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {}
        )

    def get(self, backend: str) -> dict[str, Any]:
        return dict(self.data.get(backend, {}))

    def put(self, backend: str, **values: Any) -> None:
        self.data.setdefault(backend, {}).update(values)
        atomic_write(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")


class TrackedWriter(MetricsWriter):
    """The run's metrics writer; also feeds ``outputs.loggers``.

    ``resume_after_round``: as for :class:`MetricsWriter` (None = a fresh run; -1 = the run
    is redone from the start, as a timing-only simulation is)."""

    def __init__(
        self,
        scenario: Scenario,
        run_dir: str | os.PathLike[str],
        resume_after_round: int | None = None,
    ) -> None:
        super().__init__(run_dir, csv=scenario.outputs.csv, resume_after_round=resume_after_round)
        from fedgrpo.experiments.tracking_backends import open_logger

        self.loggers: list[RunLogger] = []
        state = TrackingState(self.run_dir)
        try:
            for name in scenario.outputs.loggers:
                self.loggers.append(
                    open_logger(name, scenario, self.run_dir, state, resume_after_round)
                )
            fresh = resume_after_round is None or resume_after_round < 0
            if fresh:
                params = scenario_params(scenario)
                for lg in self.loggers:
                    lg.log_params(params)
            for rec in self.records:  # kept records: buffered loggers skip what they hold
                self._forward(rec)
        except BaseException:
            self.close("failed")
            raise

    def _forward(self, rec: Mapping[str, Any]) -> None:
        event = rec.get("event")
        if event not in ("round", "eval") or not self.loggers:
            return
        metrics = numeric_metrics(str(event), rec)
        for lg in self.loggers:
            lg.log_metrics(metrics, int(rec["round"]))

    def round(self, record: Mapping[str, Any]) -> None:
        super().round(record)
        self._forward(self.records[-1])

    def eval(self, record: Mapping[str, Any]) -> None:
        super().eval(record)
        self._forward(self.records[-1])

    def commit(self, through_round: int) -> None:
        """Called after each checkpoint (rounds up to ``through_round`` are safe)."""
        for lg in self.loggers:
            lg.commit(through_round)

    def __exit__(self, *exc: object) -> None:
        kind = exc[0] if exc else None
        interrupted = isinstance(kind, type) and issubclass(kind, KeyboardInterrupt)
        self.close("finished" if kind is None else "interrupted" if interrupted else "failed")

    def close(self, status: str = "finished") -> None:
        """Close the metrics file and every logger (each one even if another fails)."""
        super().close()
        loggers, self.loggers = self.loggers, []
        errors: list[BaseException] = []
        for lg in loggers:
            try:
                lg.close(status)
            except Exception as exc:  # one broken tracker must not hide the others' data
                errors.append(exc)
        if errors:
            raise errors[0]
