"""Does FedGRPO actually teach the server model something? (slow: builds the default zoo)

The quickstart setup, shortened: the default tiny zoo (built once into the project's model
cache, ~3 min on 2 cores, then reused by `make demo`), five simulated expert clients, the
confidence graph, rewards only. The assertion is about held-out data the policy never trained
on, greedy decoding, with a fixed seed: more of the 500 test items flip wrong→right than
right→wrong, beyond what chance explains (exact one-sided sign test, p < 0.05).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scenarios.loader import load_scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_short_fedgrpo_run_raises_held_out_accuracy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scenarios.runner import run_scenario

    monkeypatch.setenv(
        "FEDGRPO_MODELS_DIR", os.environ.get("FEDGRPO_MODELS_DIR", str(ROOT / "models"))
    )
    s = load_scenario(
        ROOT / "scenarios" / "quickstart.yaml",
        ["rounds=40", "eval.every=0", "checkpoint.every=0", "outputs.progress=false"],
    )
    summary = run_scenario(s, tmp_path / "run")

    change = summary["accuracy_change"]
    assert change["items"] == 500
    assert change["gained"] > change["lost"]
    assert change["p_value"] < 0.05, change
    assert summary["final_mean_accuracy"] > summary["initial_mean_accuracy"]
    # the gain is in reasoning, not formatting: the base already writes the answer format
    assert summary["initial_format_rate"] > 0.95
