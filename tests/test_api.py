"""The Python API (fedgrpo.run_scenario / sweep / load_run) against the CLI, on real runs.

Timing-only scenarios (no models, virtual time) keep these cheap; the notebook test runs a
model-in-the-loop scenario through the same API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fedgrpo
from fedgrpo.errors import FedGRPOError, RunDirError
from fedgrpo.experiments import api
from fedgrpo.scenarios.fields import ScenarioError

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "scenarios" / "dropout-sweep.yaml"  # 50 devices, timing-only


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if "wall" not in k} for x in lines]


def test_run_scenario_is_fedgrpo_run(tmp_path: Path) -> None:
    from fedgrpo.experiments.cli import main

    # plots off on both sides (cheaper): tests/test_notebook.py sees run_scenario draw them
    sets = ["--set", "rounds=3", "--set", "outputs.plots=false"]
    assert main(["run", str(FLEET), *sets, "--out", str(tmp_path / "cli")]) == 0
    (cli_dir,) = (tmp_path / "cli" / "dropout-sweep").iterdir()
    overrides = {"rounds": 3, "outputs.plots": False}
    result = fedgrpo.run_scenario("dropout-sweep", overrides, out=tmp_path / "api")
    assert result.run_dir.parent == tmp_path / "api" / "dropout-sweep"
    assert _records(result.run_dir) == _records(cli_dir)
    body = lambda d: (d / "scenario.yaml").read_text().split("\n", 1)[1]  # noqa: E731 (after the dated header)
    assert body(result.run_dir) == body(cli_dir)
    assert sorted(p.name for p in result.run_dir.iterdir()) == sorted(
        p.name for p in cli_dir.iterdir()
    )
    cli_summary = json.loads((cli_dir / "summary.json").read_text())
    assert {k: v for k, v in result.summary.items() if k != "wall_s"} == {
        k: v for k, v in cli_summary.items() if k != "wall_s"
    }
    m = result.metrics
    assert list(m["round"]) == [1, 2, 3] and "event" not in m.columns
    assert {"participation.phone-4g", "participation.rpi4"} <= set(m.columns)
    assert result.status == "finished" and result.clock == "virtual" and result.evals.empty
    assert result.config["rounds"] == 3 and result.scenario.rounds == 3
    shares = result.participation["share"]
    assert shares.sum() == pytest.approx(1.0)
    answered = m["participation.phone-4g"].sum() + m["participation.rpi4"].sum()
    assert 1 - shares["not answered"] == pytest.approx(answered / m["asked"].sum())
    assert shares["rpi4"] == pytest.approx(m["participation.rpi4"].sum() / m["asked"].sum())
    again = fedgrpo.load_run(result.run_dir)
    assert again.summary == result.summary and again.metrics.equals(m)


def test_overrides_as_mapping_strings_seed_or_a_scenario_are_the_same() -> None:
    a = api.load("quickstart", {"rounds": 4, "round_policy.deadline_s": 5}, seed=3)
    b = api.load(
        ROOT / "scenarios" / "quickstart.yaml", ["rounds=4", "round_policy.deadline_s=5", "seed=3"]
    )
    c = api.load(b, {"selection.selector": "random"})
    assert a == b and (a.rounds, a.seed, a.round_policy.deadline_s) == (4, 3, 5)
    assert c.selection.selector == "random" and c.seed == 3
    assert api.load(b.model_dump(mode="json", by_alias=True)) == b


def test_bad_input_is_a_clear_error_and_creates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(ScenarioError) as err:
        fedgrpo.run_scenario("quickstart", {"round_policy.deadline_s": -1, "rounds": 0}, out=out)
    assert "round_policy.deadline_s: -1" in str(err.value) and "rounds: 0" in str(err.value)
    with pytest.raises(ScenarioError, match="'bogus' is not a field of the scenario; allowed: "):
        fedgrpo.run_scenario("quickstart", {"bogus": 1}, out=out)
    with pytest.raises(ScenarioError, match="not a shipped scenario"):
        fedgrpo.run_scenario("quikstart", out=out)
    with pytest.raises(ScenarioError, match="list of KEY=VALUE"):
        fedgrpo.run_scenario("quickstart", "rounds=3", out=out)  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="is not a scenario"):
        fedgrpo.run_scenario(42, out=out)  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="not a list of values"):
        fedgrpo.sweep("quickstart", {"seed": "012"}, out=out)
    with pytest.raises(ScenarioError, match="no values"):
        fedgrpo.sweep("quickstart", {"seed": []}, out=out)
    with pytest.raises(RunDirError, match="run directory not found") as missing:
        fedgrpo.load_run(tmp_path / "nope")
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, FedGRPOError)
    with pytest.raises(RunDirError, match="is this a run directory"):
        fedgrpo.load_run(tmp_path)
    assert not out.exists()


def test_sweep_is_a_tidy_frame_over_grid_and_seeds(tmp_path: Path) -> None:
    grid = fedgrpo.sweep(FLEET, {"sim.dropout.fail": [0.0, 0.5]}, seeds=2,
                         overrides={"rounds": 4}, workers=0, out=tmp_path, metric="virtual_s")  # fmt: skip
    f = grid.frame
    assert list(f["sim.dropout.fail"]) == [0.0, 0.0, 0.5, 0.5] and list(f["seed"]) == [0, 1, 0, 1]
    assert set(f["status"]) == {"ok"} and list(f["rounds_completed"]) == [4] * 4
    assert all(Path(d).parent == grid.sweep_dir / "runs" for d in f["run_dir"])
    pd = pytest.importorskip("pandas")
    on_disk = pd.read_csv(grid.sweep_dir / "variants.csv")
    assert list(on_disk["virtual_s"]) == pytest.approx(list(f["virtual_s"]))
    points = grid.points
    assert list(points["n"]) == [2, 2] and list(points["ok"]) == [2, 2]
    first = f[f["sim.dropout.fail"] == 0.0]["virtual_s"].mean()
    assert points["virtual_s_mean"][0] == pytest.approx(first)
    m = grid.metrics
    assert len(m) == 4 * 4 and {"variant", "sim.dropout.fail", "seed", "round"} <= set(m.columns)
    rate = (m.groupby("sim.dropout.fail")["answered"].sum()
            / m.groupby("sim.dropout.fail")["asked"].sum())  # fmt: skip
    assert rate[0.5] < rate[0.0] - 0.2  # half the devices crash: far fewer answers
    assert grid.failed == []


def test_import_fedgrpo_is_light_and_the_api_is_lazy() -> None:
    code = (
        "import sys, fedgrpo\n"
        "heavy = [m for m in ('pandas', 'pydantic', 'torch', 'matplotlib', 'yaml',"
        " 'fedgrpo.experiments') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from fedgrpo import run_scenario, load_run, sweep\n"
        "import fedgrpo.experiments.api as api\n"
        "assert (run_scenario, load_run, sweep) == (api.run_scenario, api.load_run, api.sweep)\n"
        "assert 'run_scenario' in dir(fedgrpo)\n"
        "try:\n    fedgrpo.nope\nexcept AttributeError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "has no attribute 'nope'" in done.stdout


def test_edge_only_install_names_the_extra() -> None:
    code = (
        "import sys\n"
        "for m in ('pydantic', 'pydantic_core', 'yaml', 'pandas'): sys.modules[m] = None\n"
        "from fedgrpo.errors import MissingExtraError\n"
        "try:\n    from fedgrpo import run_scenario\n"
        "except MissingExtraError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "pip install 'fedgrpo[server]'" in done.stdout
