"""Metrics records, summaries, plots and comparison tables on real files with real matplotlib."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.experiments.records import (
    METRICS_CSV,
    METRICS_JSONL,
    MetricsWriter,
    load_run,
    run_summary,
    write_summary,
)
from fedgrpo.experiments.report import make_report, summary_table
from fedgrpo.scenarios.loader import dump_scenario
from fedgrpo.scenarios.schema import Scenario

PROFILES = ("rpi4", "laptop")


def round_record(r: int, time_s: float) -> dict[str, Any]:
    return {
        "round": r,
        "time_s": time_s,
        "duration_s": 1.0 + (r % 4) * 0.5,
        "asked": 16,
        "answered": 14,
        "late": 1,
        "failed": 1,
        "offline": 0,
        "cancelled": 0,
        "coverage": 0.75 + 0.01 * (r % 5),
        "groups_with_signal": 7,
        "groups": 8,
        "loss": 0.1 / r,
        "reward_mean": 0.5,
        "bytes_sent": 4000 + r,
        "bytes_received": 256,
        "lora_bytes": 2_000_000,
        "wasted_device_s": 0.4,
        "participation": {"rpi4": 4, "laptop": 10},
    }


def eval_record(r: int, time_s: float, acc: float) -> dict[str, Any]:
    return {
        "round": r,
        "time_s": time_s,
        "accuracy": {"add": acc + 0.05, "sub": acc - 0.05},
        "mean_accuracy": acc,
        "format_rate": 0.9,
    }


def make_run(
    root: Path, name: str, seed: int, accs: list[float], rounds: int = 10, summary: bool = True
) -> Path:
    """A run dir as the runner leaves it: scenario.yaml, metrics.jsonl/csv, summary.json."""
    run_dir = root / name / f"run-seed{seed}"
    dump_scenario(Scenario(name=name, seed=seed, rounds=rounds), run_dir / "scenario.yaml")
    every = rounds // (len(accs) - 1)
    with MetricsWriter(run_dir) as w:
        w.eval(eval_record(0, 0.0, accs[0]))
        for r in range(1, rounds + 1):
            w.round(round_record(r, r * 2.0))
            if r % every == 0:
                w.eval(eval_record(r, r * 2.0, accs[r // every]))
    if summary:
        write_summary(
            run_dir,
            {
                "scenario": name,
                "mode": "sim",
                "seed": seed,
                "rounds_completed": rounds,
                "initial_mean_accuracy": accs[0],
                "final_mean_accuracy": accs[-1],
                "best_mean_accuracy": max(accs),
                "total_bytes": sum(4000 + r + 256 for r in range(1, rounds + 1)),
                "lora_total_bytes": 2_000_000 * rounds,
                "wall_s": 12.5 + seed,
                "virtual_s": rounds * 2.0,
                "status": "finished",
            },
        )
    return run_dir


def test_metrics_writer_jsonl_and_csv(tmp_path: Path) -> None:
    run = make_run(tmp_path, "q", 0, [0.2, 0.3, 0.4], rounds=4)
    lines = (run / METRICS_JSONL).read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r["event"] for r in recs] == [
        "eval",
        "round",
        "round",
        "eval",
        "round",
        "round",
        "eval",
    ]
    assert recs[1]["participation"] == {"rpi4": 4, "laptop": 10}
    with (run / METRICS_CSV).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7
    assert rows[1]["participation.rpi4"] == "4" and rows[0]["accuracy.add"] == "0.25"
    assert rows[1]["event"] == "round" and rows[1]["round"] == "1"


def test_metrics_writer_rejects_incomplete_records_and_cleans_nan(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="lacks"):
            w.round({"round": 1})
        rec = round_record(1, 1.0)
        rec["loss"] = float("nan")
        w.round(rec)
    (line,) = (tmp_path / METRICS_JSONL).read_text().splitlines()
    assert json.loads(line)["loss"] is None  # valid JSON, no NaN token


def test_metrics_flushed_per_line_and_resume_truncates(tmp_path: Path) -> None:
    w = MetricsWriter(tmp_path, csv=False)
    for r in range(1, 6):
        w.round(round_record(r, float(r)))
    # not closed (as in a crash): every line is already on disk
    assert len((tmp_path / METRICS_JSONL).read_text().splitlines()) == 5
    with (tmp_path / METRICS_JSONL).open("a") as fh:
        fh.write('{"event": "round", "rou')  # torn last line
    w.close()
    assert load_run(tmp_path).summary["rounds_completed"] == 5
    # resume from a checkpoint after round 3: rounds 4-5 are dropped, then new ones appended
    with MetricsWriter(tmp_path, resume_after_round=3) as w2:
        w2.round(round_record(4, 4.0))
    rounds = [json.loads(x)["round"] for x in (tmp_path / METRICS_JSONL).read_text().splitlines()]
    assert rounds == [1, 2, 3, 4]


def test_summary_derived_for_crashed_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, "crash", 1, [0.1, 0.5, 0.3], rounds=6, summary=False)
    s = run_summary(run)
    assert s["status"] == "incomplete" and s["rounds_completed"] == 6
    assert (s["initial_mean_accuracy"], s["final_mean_accuracy"], s["best_mean_accuracy"]) == (
        0.1,
        0.3,
        0.5,
    )
    assert s["total_bytes"] == sum(4000 + r + 256 for r in range(1, 7))
    assert s["lora_total_bytes"] == 12_000_000 and s["virtual_s"] == 12.0
    assert s["scenario"] == "crash" and s["seed"] == 1


def test_write_summary_requires_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="summary lacks"):
        write_summary(tmp_path, {"scenario": "x"})


def _png_ok(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.exists() and path.stat().st_size > 5_000, path
    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 300
    assert float(img[..., :3].std()) > 0.02, f"{path.name} looks blank"


PLOTS = (
    "accuracy_vs_round.png",
    "accuracy_vs_time.png",
    "round_duration_cdf.png",
    "reward_coverage.png",
    "participation.png",
    "bytes_per_round.png",
)


def test_single_run_report(tmp_path: Path) -> None:
    run = make_run(tmp_path, "quickstart", 0, [0.2, 0.35, 0.5])
    files = make_report([run])
    assert {f.name for f in files} == set(PLOTS)
    assert all(f.parent == run / "plots" for f in files)
    for f in files:
        _png_ok(f)


def test_multi_run_report_groups_seeds(tmp_path: Path) -> None:
    a = [make_run(tmp_path, "alpha", s, [0.2, 0.3 + 0.1 * s, 0.4 + 0.1 * s]) for s in range(3)]
    b = make_run(tmp_path, "beta", 0, [0.2, 0.25, 0.3])
    out = tmp_path / "cmp"
    files = make_report([*a, b], out)
    names = {f.name for f in files}
    assert set(PLOTS) <= names and {"comparison.md", "comparison.csv"} <= names
    for f in files:
        if f.suffix == ".png":
            _png_ok(f)
    with (out / "comparison.csv").open() as fh:
        rows = {r["scenario"]: r for r in csv.DictReader(fh)}
    finals = [0.4, 0.5, 0.6]
    assert rows["alpha"]["runs"] == "3" and rows["alpha"]["seeds"] == "0 1 2"
    assert math.isclose(float(rows["alpha"]["final_mean_accuracy_mean"]), statistics.fmean(finals))
    assert math.isclose(float(rows["alpha"]["final_mean_accuracy_std"]), statistics.stdev(finals))
    assert math.isclose(float(rows["alpha"]["wall_s_mean"]), 13.5)
    assert rows["beta"]["runs"] == "1" and float(rows["beta"]["final_mean_accuracy_std"]) == 0.0
    md = (out / "comparison.md").read_text()
    assert (
        "| alpha | 3 | 0 1 2 | 0.200 ± 0.000 | 0.500 ± 0.100 | 0.500 ± 0.100 | 13.5 ± 1.0 |" in md
    )
    assert "| beta | 1 | 0 | 0.200 | 0.300 | 0.300 |" in md


def test_summary_table_values(tmp_path: Path) -> None:
    runs = [make_run(tmp_path, "q", s, [0.2, 0.3, 0.45 + s / 100]) for s in range(2)]
    table = summary_table(runs)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "rounds"]
    assert len(lines) == 4
    assert "q seed=0" in lines[2] and "0.200" in lines[2] and "0.450" in lines[2]
    assert "q seed=1" in lines[3] and "0.460" in lines[3] and "finished" in lines[3]
    assert "20.0 MB" in lines[2]  # LoRA baseline bytes, 10 rounds x 2 MB


def test_csv_gains_columns_for_new_profiles(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path) as w:
        for r in range(1, 4):
            rec = round_record(r, float(r))
            if r == 3:
                rec["participation"] = {"rpi4": 1, "jetson": 2}
            w.round(rec)
    with (tmp_path / METRICS_CSV).open() as fh:
        rows = list(csv.DictReader(fh))
    assert [row["participation.jetson"] for row in rows] == ["", "", "2"]
    assert [row["participation.laptop"] for row in rows] == ["10", "10", ""]


def test_default_output_dirs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", 0, [0.1, 0.2])
    b = make_run(tmp_path, "b", 0, [0.1, 0.3])
    files = make_report([a, b])
    assert files[0].parent.parent == tmp_path and files[0].parent.name.startswith("comparison-")


def test_torn_last_line_is_dropped_before_appending(tmp_path: Path) -> None:
    with MetricsWriter(tmp_path, csv=True) as w:
        for r in range(1, 4):
            w.round(round_record(r, float(r)))
    with (tmp_path / METRICS_JSONL).open("a") as fh:
        fh.write('{"event": "round", "rou')  # killed mid-write
    for _ in range(2):  # a resume, then a second resume of the resumed run
        with MetricsWriter(tmp_path, resume_after_round=3) as w2:
            assert [r["round"] for r in w2.records] == [1, 2, 3]
    with MetricsWriter(tmp_path, resume_after_round=3) as w3:
        w3.round(round_record(4, 4.0))
    lines = (tmp_path / METRICS_JSONL).read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2, 3, 4]  # every line parses
    import csv

    with (tmp_path / "metrics.csv").open() as fh:
        assert [int(row["round"]) for row in csv.DictReader(fh)] == [1, 2, 3, 4]
    assert load_run(tmp_path).summary["rounds_completed"] == 4


def test_per_item_flags_survive_the_csv(tmp_path: Path) -> None:
    """A list (per-item 0/1 flags) is a JSON cell: a CSV reader cannot read "0011" as 11."""
    with MetricsWriter(tmp_path) as w:
        w.eval({**eval_record(0, 0.0, 0.5), "correct_items": [0, 0, 1, 1]})
    (rec,) = [json.loads(line) for line in (tmp_path / METRICS_JSONL).read_text().splitlines()]
    assert rec["correct_items"] == [0, 0, 1, 1]
    with (tmp_path / METRICS_CSV).open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["correct_items"] == "[0,0,1,1]" and json.loads(row["correct_items"]) == [0, 0, 1, 1]


def test_report_groups_by_resolved_config_and_leaves_out_failed_runs(tmp_path: Path) -> None:
    ten = [make_run(tmp_path / "a", "alpha", s, [0.2, 0.3, 0.4], rounds=10) for s in (0, 1)]
    four = make_run(tmp_path / "b", "alpha", 0, [0.2, 0.5, 0.6], rounds=4)  # a --set variant
    dead = make_run(tmp_path / "c", "alpha", 1, [0.2, 0.2], rounds=2, summary=False)
    nothing = dict.fromkeys(
        ["initial_mean_accuracy", "final_mean_accuracy", "best_mean_accuracy", "virtual_s"]
    )
    write_summary(
        dead,
        {**nothing, "scenario": "alpha", "mode": "sim", "seed": 1, "status": "failed",
         "rounds_completed": 0, "error": "RuntimeError: boom", "total_bytes": 0,
         "lora_total_bytes": 0, "wall_s": 0.1},
    )  # fmt: skip

    out = tmp_path / "cmp"
    make_report([*ten, four, dead], out)
    with (out / "comparison.csv").open() as fh:
        rows = {r["scenario"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"alpha (rounds=10)", "alpha (rounds=4)"}
    assert rows["alpha (rounds=10)"]["runs"] == "2" and rows["alpha (rounds=4)"]["runs"] == "1"
    md = (out / "comparison.md").read_text()
    assert f"skipped {dead} (failed: RuntimeError: boom)" in md
