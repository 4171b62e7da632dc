"""The real pretrained model end to end: SmolLM2-135M-Instruct as the server of
``scenarios/smollm2.yaml`` for one small round (the measured run is benchmarks/real_model.py),
and the GPU smoke script's skip on a machine without a GPU. The smoke round is in make test
(slow-marked): it shares the quickstart zoo that tests/test_learning.py builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # in make test: ~16 s with the zoo built, + ~25 s the first time SmolLM2 is unpacked
def test_smollm2_scenario_one_round_writes_the_format_and_updates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fedgrpo.experiments.runner import run_scenario
    from fedgrpo.scenarios.loader import load_scenario, new_run_dir

    monkeypatch.setenv("FEDGRPO_MODELS_DIR", os.environ.get("FEDGRPO_MODELS_DIR", str(ROOT / "models")))
    small = [
        "rounds=1", "server.grpo.questions_per_round=2", "server.grpo.group_size=3",
        "server.grpo.max_new_tokens=16", "eval.per_domain=1", "selection.aux_size=10", "selection.L=2",
        "outputs.save_model=false", "outputs.plots=false",
    ]
    s = load_scenario(ROOT / "scenarios" / "smollm2.yaml", small)
    run_dir = new_run_dir(s, tmp_path)
    summary = run_scenario(s, run_dir)
    assert summary["status"] == "finished" and summary["rounds_completed"] == 1
    # the chat prompt + exemplars: SmolLM2 writes `answer: N` (the plain prompt gives 0.00)
    assert summary["initial_format_rate"] >= 0.6
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    rounds = [r for r in records if r.get("event") == "round"]
    assert rounds[0]["coverage"] == 1.0 and rounds[0]["reward_mean"] is not None


def test_gpu_smoke_skips_cleanly_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run benchmarks/gpu_smoke.sh itself (minutes)")
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_smoke.sh")],
        env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SKIPPED" in proc.stdout and "no CUDA GPU" in proc.stdout
    broken = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_smoke.sh")],
        env={**os.environ, "PYTHON": "/nonexistent/python"}, capture_output=True, text=True, timeout=60,
    )
    assert broken.returncode == 2 and "cannot import torch" in broken.stderr
