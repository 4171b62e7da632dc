"""provenance.json: commit, package versions, machine, command line and models of a run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import fedgrpo.experiments.provenance as prov
from fedgrpo.experiments.runner import run_scenario
from fedgrpo.scenarios.loader import load_scenario, new_run_dir

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"


def test_record_has_every_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("FEDGRPO_")]:  # e.g. make test's
        monkeypatch.delenv(name)
    monkeypatch.setenv("FEDGRPO_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("FEDGRPO_EDGE_TOKEN", "secret")
    monkeypatch.setattr(sys, "argv", ["fedgrpo", "run", "quick start.yaml", "--rounds", "2"])
    s = load_scenario(LIBRARY / "quickstart.yaml")
    path = prov.write_provenance(s, tmp_path / "run")
    rec = json.loads(path.read_text())
    assert rec["command"]["argv"] == ["fedgrpo", "run", "quick start.yaml", "--rounds", "2"]
    assert rec["command"]["command"] == "fedgrpo run 'quick start.yaml' --rounds 2"
    assert rec["command"]["env"] == {"FEDGRPO_MODELS_DIR": str(tmp_path / "models")}
    assert "secret" not in path.read_text()
    assert rec["packages"]["fedgrpo"] and rec["packages"]["numpy"]
    assert {"torch", "transformers", "onnxruntime"} <= set(rec["packages"])
    m = rec["machine"]
    assert m["cpu_count"] >= 1 and m["python"] == ".".join(map(str, sys.version_info[:3]))
    zoo = rec["models"]["zoo"]
    assert set(zoo) == {"server-base", *(f"expert-{k}" for k in range(5))}
    assert len(zoo["expert-0"]["recipe_digest"]) == 64 and not zoo["expert-0"]["cached"]
    assert zoo["expert-0"]["path"].startswith(str(tmp_path / "models"))
    assert rec["git"] is None or len(rec["git"]["commit"]) == 40


def test_outside_a_git_checkout_git_is_null(tmp_path: Path) -> None:
    assert prov.git_info(tmp_path) is None


def test_no_git_binary_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert prov.git_info() is None


def test_resume_appends(tmp_path: Path) -> None:
    s = load_scenario(LIBRARY / "quickstart.yaml")
    path = prov.write_provenance(s, tmp_path)
    first = json.loads(path.read_text())
    prov.write_provenance(s, tmp_path, resume=True)
    again = json.loads(path.read_text())
    assert again["started"] == first["started"] and len(again["resumes"]) == 1
    assert "command" in again["resumes"][0]


def test_runner_writes_it(tmp_path: Path) -> None:
    # dropout-sweep is timing-only (no model): a fast real run through run_scenario
    s = load_scenario(LIBRARY / "dropout-sweep.yaml", ["rounds=2"])
    run_dir = new_run_dir(s, tmp_path)
    run_scenario(s, run_dir)
    rec = json.loads((run_dir / prov.PROVENANCE_NAME).read_text())
    assert rec["scenario"] == "dropout-sweep" and rec["models"] is None
