"""Sweep mechanics: grid parsing/expansion, parallel spawn workers, failures, outputs.

The real runner (fedgrpo.experiments.runner) belongs to another component; these tests inject
``fake_runner``, which writes a genuine metrics.jsonl and summary.json with values derived
from the variant's parameters so the comparison can be checked exactly.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.experiments.records import MetricsWriter, write_summary
from fedgrpo.experiments.sweep import expand_grid, parse_grid, run_sweep, split_values
from fedgrpo.scenarios.schema import Scenario, ScenarioError

BASE = """\
# a tiny timing-only base scenario
name: tiny
seed: 10
rounds: 3
clients: {groups: [{name: pi, count: 4, profile: rpi4}]}
selection: {selector: random}
sim: {reward_source: timing, dropout: {offline: 0.0}}
"""


def fake_runner(scenario: Scenario, run_dir: Path, resume: bool) -> Mapping[str, Any]:
    """Stand-in for fedgrpo.experiments.runner.run_scenario: final accuracy = 0.8 - offline + seed/100."""
    offline = scenario.sim.dropout.offline if scenario.sim.dropout else 0.0
    offline = offline or 0.0
    if scenario.round_policy.over_selection == 2:
        raise RuntimeError("boom: simulated runner crash")
    acc = 0.8 - offline + (scenario.seed - 10) / 100
    with MetricsWriter(run_dir) as w:
        w.eval(
            {
                "round": 0,
                "time_s": 0.0,
                "accuracy": {"add": 0.1},
                "mean_accuracy": 0.1,
                "format_rate": 1.0,
            }
        )
        w.eval(
            {
                "round": scenario.rounds,
                "time_s": 1.0,
                "accuracy": {"add": acc},
                "mean_accuracy": acc,
                "format_rate": 1.0,
            }
        )
    summary = {
        "scenario": scenario.name,
        "mode": scenario.mode,
        "seed": scenario.seed,
        "rounds_completed": scenario.rounds,
        "initial_mean_accuracy": 0.1,
        "final_mean_accuracy": acc,
        "best_mean_accuracy": acc,
        "total_bytes": 100,
        "lora_total_bytes": 10_000,
        "wall_s": 0.01,
        "virtual_s": 5.0 + offline * 10,
        "status": "finished",
        "resume": resume,
    }
    write_summary(run_dir, summary)
    return summary


@pytest.fixture
def base_file(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(BASE, encoding="utf-8")
    return p


def test_split_and_parse_grid() -> None:
    assert split_values("0,0.1, 0.2") == ["0", "0.1", "0.2"]
    assert split_values("[add, sub],[mul]") == ["[add, sub]", "[mul]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    grid = parse_grid(["sim.dropout.offline=0,0.5", "tasks.domains=[add, sub],[mul]"])
    assert grid == {"sim.dropout.offline": [0, 0.5], "tasks.domains": [["add", "sub"], ["mul"]]}
    with pytest.raises(ScenarioError, match="expected KEY=V1,V2"):
        parse_grid(["novalues"])
    with pytest.raises(ScenarioError, match="given twice"):
        parse_grid(["rounds=1", "rounds=2"])


def test_expand_grid_cartesian_times_seeds() -> None:
    base = {"name": "b", "seed": 5, "selection": {"selector": "random"}}
    grid: dict[str, list[Any]] = {
        "round_policy.over_selection": [0, 1],
        "selection.dispatch": ["split", "broadcast"],
    }
    variants = expand_grid(base, grid, seeds=3)
    assert len(variants) == 12
    assert len({v.name for v in variants}) == 12
    v = variants[0]
    assert v.name == "b-over_selection=0-dispatch=split-seed5"
    assert v.scenario.seed == 5 and v.scenario.name == v.name
    assert {x.seed for x in variants} == {5, 6, 7}
    assert {
        (x.scenario.round_policy.over_selection, x.scenario.selection.dispatch) for x in variants
    } == {(0, "split"), (0, "broadcast"), (1, "split"), (1, "broadcast")}


def test_expand_grid_validates_every_variant_up_front() -> None:
    base = {"name": "b"}
    with pytest.raises(ScenarioError) as info:
        expand_grid(base, {"round_policy.deadline_s": [1, -1], "round_policy.quorum": [4, 99]})
    text = str(info.value)
    assert "round_policy.deadline_s: -1 is out of range" in text
    assert "round_policy.quorum: 99 is larger than server.grpo.group_size" in text
    with pytest.raises(ScenarioError, match="did you mean 'deadline_s'"):
        expand_grid(base, {"round_policy.deadline": [1, 2]})


def test_run_sweep_inline_collects_and_reports_failures(base_file: Path, tmp_path: Path) -> None:
    result = run_sweep(
        base_file,
        ["sim.dropout.offline=0,0.2", "round_policy.over_selection=0,2"],
        seeds=2,
        workers=0,
        out_root=tmp_path / "runs",
        runner=fake_runner,
        progress=False,
    )
    assert result.sweep_dir.parent == tmp_path / "runs" / "tiny-sweep"
    assert len(result.results) == 8
    assert len(result.failed) == 4
    assert all("boom" in r.error for r in result.failed)
    ok = [r for r in result.results if r.status == "ok"]
    assert all(
        (r.run_dir / "summary.json").exists() and (r.run_dir / "scenario.yaml").exists() for r in ok
    )
    with (result.sweep_dir / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    by_point = {(r["sim.dropout.offline"], r["round_policy.over_selection"]): r for r in rows}
    good = by_point[("0.2", "0")]
    finals = [0.8 - 0.2 + 0.0, 0.8 - 0.2 + 0.01]
    assert good["ok"] == "2" and good["failed"] == "0"
    assert math.isclose(float(good["final_mean_accuracy_mean"]), statistics.fmean(finals))
    assert math.isclose(float(good["final_mean_accuracy_std"]), statistics.stdev(finals))
    assert (
        by_point[("0", "2")]["failed"] == "2"
        and by_point[("0", "2")]["final_mean_accuracy_mean"] == ""
    )
    md = (result.sweep_dir / "comparison.md").read_text()
    assert "## failed variants" in md and "RuntimeError: boom" in md
    png = result.sweep_dir / "comparison.png"
    assert png.exists() and png.stat().st_size > 5_000
    with (result.sweep_dir / "variants.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 8


def test_run_sweep_in_spawned_workers_with_other_metric(base_file: Path, tmp_path: Path) -> None:
    result = run_sweep(
        base_file,
        ["sim.dropout.offline=0,0.3"],
        seeds=1,
        workers=2,
        out_root=tmp_path / "runs",
        runner=fake_runner,
        metric="virtual_s",
        progress=False,
    )
    assert [r.status for r in result.results] == ["ok", "ok"]
    assert [r.summary["virtual_s"] for r in result.results] == [5.0, 8.0]
    with (result.sweep_dir / "comparison.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["virtual_s_mean"]) for r in rows] == [5.0, 8.0]
    assert (result.sweep_dir / "comparison.png").stat().st_size > 5_000
