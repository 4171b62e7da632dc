"""The tracker backends of ``outputs.loggers`` (interface and semantics: :mod:`.tracking`).

* ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` on ``RUN_DIR/tensorboard``
  (``tensorboard --logdir runs/``); the config as hparams + a text summary at step 0.
* ``mlflow``: an ``MlflowClient`` on the local file store ``RUN_DIR/mlruns`` (experiment =
  scenario name, run name = the run directory's name). No server: read it back with
  ``mlflow.search_runs`` or the client. MLflow 3 keeps the file store in maintenance mode and
  refuses it unless ``MLFLOW_ALLOW_FILE_STORE=true``; that is set for this process (the
  database stores need SQLAlchemy, which mlflow-skinny does not ship).
* ``wandb``: ``wandb.init(mode="offline", dir=RUN_DIR)``; ``wandb sync RUN_DIR/wandb/...``
  uploads later. Needs ``pip install wandb``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedgrpo.errors import ConfigError
from fedgrpo.experiments.tracking import RunLogger, TrackingState
from fedgrpo.scenarios.schema import Scenario
from fedgrpo.scenarios.tracking_section import LOGGER_PACKAGES

MLFLOW_BATCH = 100  # MLflow's log_batch takes at most 100 params (1000 metrics) per call
MLFLOW_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


class TensorBoardLogger:
    """Writes as it goes (flushed per record); a resumed run purges the dead run's later
    steps (``purge_step``) and skips the ones it already holds."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, resume_after_round: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.purge = None if resume_after_round is None else resume_after_round + 1
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=self.purge)

    def log_params(self, params: Mapping[str, str | int | float | bool]) -> None:
        from torch.utils.tensorboard.summary import hparams

        exp, ssi, sei = hparams(dict(params), {"eval/mean_accuracy": 0.0})
        file_writer = self.writer.file_writer  # hparams in this run, not a sub-run
        assert file_writer is not None  # opened by SummaryWriter.__init__
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        table = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("config", "| key | value |\n|---|---|\n" + table, global_step=0)
        self.writer.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self.purge is not None and step < self.purge:
            return  # written by the run being resumed
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def commit(self, through_round: int) -> None:
        pass

    def close(self, status: str) -> None:
        self.writer.add_text("status", status, global_step=0)
        self.writer.close()


class _Buffered:
    """Holds records until ``commit``; never logs a step at or below the last commit."""

    name = ""

    def __init__(self, state: TrackingState) -> None:
        self.state = state
        self.committed = int(state.get(self.name).get("committed_round", -1))
        self.pending: dict[int, dict[str, float]] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if step > self.committed:
            self.pending.setdefault(step, {}).update(metrics)

    def commit(self, through_round: int) -> None:
        steps = sorted(s for s in self.pending if s <= through_round)
        if steps:
            self._write({s: self.pending.pop(s) for s in steps})
            self.committed = max(self.committed, steps[-1])
            self.state.put(self.name, committed_round=self.committed)

    def close(self, status: str) -> None:
        # finished: the last round was checkpointed; interrupted: the runner checkpoints
        # before closing. failed: rounds after the last checkpoint are redone on resume.
        if status != "failed" and self.pending:
            self.commit(max(self.pending))
        self._end(status)

    def _write(self, by_step: dict[int, dict[str, float]]) -> None:
        raise NotImplementedError

    def _end(self, status: str) -> None:
        raise NotImplementedError


class MLflowLogger(_Buffered):
    name = "mlflow"

    def __init__(self, s: Scenario, run_dir: Path, state: TrackingState) -> None:
        super().__init__(state)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.uri = (run_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        run_id = state.get(self.name).get("run_id")
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(s.name)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(s.name)
            tags = {"fedgrpo.mode": s.mode, "fedgrpo.seed": str(s.seed)}
            run = self.client.create_run(exp_id, run_name=run_dir.name, tags=tags)
            run_id = run.info.run_id
            state.put(self.name, run_id=run_id, tracking_uri=self.uri, experiment=s.name)
        self.run_id: str = run_id

    def log_params(self, params: Mapping[str, str | int | float | bool]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MLFLOW_BATCH])

    def _write(self, by_step: dict[int, dict[str, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for step, m in by_step.items() for k, v in m.items()]
        for i in range(0, len(items), 10 * MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=items[i : i + 10 * MLFLOW_BATCH])

    def _end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))


class WandbLogger(_Buffered):
    name = "wandb"

    def __init__(self, s: Scenario, run_dir: Path, state: TrackingState) -> None:
        super().__init__(state)
        wandb = _import_wandb()
        run_id = state.get(self.name).get("run_id") or uuid.uuid4().hex[:12]
        self.run: Any = wandb.init(
            project=s.name,
            name=run_dir.name,
            id=run_id,
            dir=str(run_dir),
            mode="offline",
            resume="allow",
        )
        state.put(self.name, run_id=run_id)

    def log_params(self, params: Mapping[str, str | int | float | bool]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def _write(self, by_step: dict[int, dict[str, float]]) -> None:
        for step, metrics in by_step.items():
            self.run.log(dict(metrics), step=step)

    def _end(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "finished" else 1)


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise ConfigError(
            "outputs.loggers: 'wandb' needs the 'wandb' package, which is not installed: "
            f"{LOGGER_PACKAGES['wandb'][1]}; or remove 'wandb' from outputs.loggers"
        ) from exc
    return wandb


def open_logger(
    name: str,
    s: Scenario,
    run_dir: Path,
    state: TrackingState,
    resume_after_round: int | None,
) -> RunLogger:
    """The backend called ``name`` (one of ``outputs.loggers``), opened on ``run_dir``."""
    if name == "tensorboard":
        return TensorBoardLogger(run_dir, resume_after_round)
    if name == "mlflow":
        return MLflowLogger(s, run_dir, state)
    if name == "wandb":
        return WandbLogger(s, run_dir, state)
    raise ConfigError(f"outputs.loggers: {name!r} is unknown; use {', '.join(LOGGER_PACKAGES)}")
