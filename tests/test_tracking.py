"""outputs.loggers: what a run logs, read back with TensorBoard's and MLflow's own readers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from tracking_readers import mlflow_client, mlflow_steps, tb_scalars

from fedgrpo.errors import ConfigError
from fedgrpo.experiments.records import read_records
from fedgrpo.experiments.tracking import TRACKING_JSON, TrackedWriter
from fedgrpo.scenarios.fields import ScenarioError
from fedgrpo.scenarios.loader import load_scenario, validate_dict
from fedgrpo.scenarios.schema import Scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def test_timing_run_logs_to_tensorboard_and_mlflow(tmp_path: Path) -> None:
    import mlflow

    from fedgrpo.experiments.runner import run_scenario

    s = load_scenario(
        SCENARIOS / "dropout-sweep.yaml",
        ["rounds=4", "outputs.loggers=[tensorboard,mlflow]", "outputs.plots=false"],
    )
    run_scenario(s, tmp_path)
    rounds = [r for r in read_records(tmp_path / "metrics.jsonl") if r["event"] == "round"]
    expected = [(r["round"], pytest.approx(r["coverage"], abs=1e-6)) for r in rounds]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert tb_scalars(tmp_path, "round/coverage") == expected
    assert mlflow_steps(tmp_path, "round/coverage") == expected

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| rounds | 4 |" in text and "| server.grpo.lr |" in text
    meta = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(meta).session_start_info.hparams
    assert hparams["rounds"].number_value == 4

    client, run_id = mlflow_client(tmp_path)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["rounds"] == "4"
    assert run.data.params["round_policy.deadline_s"] == str(s.round_policy.deadline_s)
    mlflow.set_tracking_uri(
        json.loads((tmp_path / TRACKING_JSON).read_text())["mlflow"]["tracking_uri"]
    )
    found = mlflow.search_runs(experiment_names=[s.name], output_format="list")
    assert [r.info.run_id for r in found] == [run_id]
    assert found[0].data.metrics["round/coverage"] == pytest.approx(rounds[-1]["coverage"])


def _round(r: int, value: float) -> dict[str, Any]:
    keys = ("asked", "answered", "late", "failed", "offline", "cancelled", "groups")
    rec: dict[str, Any] = {k: 1 for k in keys}
    rec.update(
        round=r,
        time_s=float(r),
        duration_s=1.0,
        coverage=value,
        groups_with_signal=1,
        loss=None,
        reward_mean=value,
        bytes_sent=10,
        bytes_received=5,
        lora_bytes=0,
        wasted_device_s=0.0,
        participation={"laptop": 2},
    )
    return rec


def _eval(r: int, acc: float) -> dict[str, Any]:
    return {
        "round": r,
        "time_s": float(r),
        "accuracy": {"add": acc},
        "mean_accuracy": acc,
        "format_rate": 1.0,
        "correct_items": [1, 0],
    }


def test_crash_then_resume_continues_the_same_runs_without_duplicate_steps(
    tmp_path: Path,
) -> None:
    """A run checkpointed at round 2 logs rounds 3-4, crashes; the resume redoes 3-4 with
    other values and finishes at 5. Both trackers hold steps 1..5 once, the resumed values."""
    s = Scenario.model_validate(
        {"name": "trk", "rounds": 5, "outputs": {"loggers": ["tensorboard", "mlflow"]}}
    )
    first = TrackedWriter(s, tmp_path)
    first.eval(_eval(0, 0.25))
    for r in range(1, 5):
        first.round(_round(r, 0.1 * r))
        if r == 2:
            first.commit(2)  # the checkpoint
    first.close("failed")
    client, run_id = mlflow_client(tmp_path)
    assert client.get_run(run_id).info.status == "FAILED"
    assert [s for s, _ in mlflow_steps(tmp_path, "round/coverage")] == [1, 2]

    resumed = TrackedWriter(s, tmp_path, resume_after_round=2)
    for r in (3, 4, 5):
        resumed.round(_round(r, 0.5 + 0.1 * r))
    resumed.eval(_eval(5, 0.75))
    resumed.commit(5)
    resumed.close("finished")

    want = [(1, 0.1), (2, 0.2), (3, 0.8), (4, 0.9), (5, 1.0)]
    got_tb = tb_scalars(tmp_path, "round/coverage")
    got_ml = mlflow_steps(tmp_path, "round/coverage")
    for got in (got_tb, got_ml):
        assert [st for st, _ in got] == [1, 2, 3, 4, 5]
        assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)
    assert tb_scalars(tmp_path, "eval/mean_accuracy") == [(0, 0.25), (5, 0.75)]
    assert mlflow_steps(tmp_path, "eval/accuracy.add") == [(0, 0.25), (5, 0.75)]
    client2, run_id2 = mlflow_client(tmp_path)
    assert run_id2 == run_id  # the same MLflow run continued
    assert client2.get_run(run_id).info.status == "FINISHED"
    assert len(client2.search_runs([client2.get_run(run_id).info.experiment_id])) == 1


def test_interrupt_commits_what_was_checkpointed(tmp_path: Path) -> None:
    s = Scenario.model_validate({"name": "trk", "outputs": {"loggers": ["mlflow"]}})
    w = TrackedWriter(s, tmp_path)
    w.round(_round(1, 0.5))
    w.close("interrupted")  # the runner checkpoints before closing on Ctrl-C
    client, run_id = mlflow_client(tmp_path)
    assert client.get_run(run_id).info.status == "KILLED"
    assert mlflow_steps(tmp_path, "round/coverage") == [(1, 0.5)]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_without_the_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ScenarioError, match=r"outputs\.loggers.*'wandb' package.*pip install wandb"
    ):
        validate_dict({"name": "x", "outputs": {"loggers": ["wandb"]}})
    from fedgrpo.experiments.tracking_backends import _import_wandb

    with pytest.raises(ConfigError, match="pip install wandb"):
        _import_wandb()


def test_logger_names_are_checked() -> None:
    with pytest.raises(ScenarioError, match=r"outputs\.loggers"):
        validate_dict({"name": "x", "outputs": {"loggers": ["tensorbord"]}})
    with pytest.raises(ScenarioError, match="repeat"):
        validate_dict({"name": "x", "outputs": {"loggers": ["mlflow", "mlflow"]}})
