"""Read a run's trackers back with TensorBoard's and MLflow's own readers (test helpers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fedgrpo.experiments.tracking import TRACKING_JSON


def tb_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def mlflow_client(run_dir: Path) -> tuple[Any, str]:
    """MLflow's client on the run's file store (MLflow 3 wants MLFLOW_ALLOW_FILE_STORE)."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / TRACKING_JSON).read_text())["mlflow"]
    return MlflowClient(tracking_uri=state["tracking_uri"]), state["run_id"]


def mlflow_steps(run_dir: Path, key: str) -> list[tuple[int, float]]:
    client, run_id = mlflow_client(run_dir)
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
