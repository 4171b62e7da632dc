"""The scenario subcommands (validate, run, resume, report, sweep) through argparse."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import fedgrpo.experiments.commands as cli
import fedgrpo.experiments.sweep as sweep_mod
from fedgrpo.experiments.records import MetricsWriter, write_summary
from fedgrpo.scenarios.schema import Scenario

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
CALLS: list[tuple[str, int, bool]] = []


def fake_runner(scenario: Scenario, run_dir: Path, resume: bool) -> Mapping[str, Any]:
    CALLS.append((scenario.name, scenario.rounds, resume))
    assert (run_dir / "scenario.yaml").exists()
    with MetricsWriter(run_dir) as w:
        for r in range(scenario.rounds + 1):
            w.eval({"round": r, "time_s": float(r), "accuracy": {"add": 0.1 * r},
                    "mean_accuracy": 0.1 * r, "format_rate": 1.0})
    summary = {
        "scenario": scenario.name, "mode": scenario.mode, "seed": scenario.seed,
        "rounds_completed": scenario.rounds, "initial_mean_accuracy": 0.0,
        "final_mean_accuracy": 0.1 * scenario.rounds, "best_mean_accuracy": 0.1 * scenario.rounds,
        "total_bytes": 10, "lora_total_bytes": 1000, "wall_s": 1.0, "virtual_s": 2.0,
        "status": "finished",
    }
    write_summary(run_dir, summary)
    return summary


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fedgrpo")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture(autouse=True)
def _fake(monkeypatch: pytest.MonkeyPatch) -> None:
    CALLS.clear()
    monkeypatch.setattr(cli, "_runner", lambda: fake_runner)
    monkeypatch.setattr(sweep_mod, "_default_runner", fake_runner)


def test_validate_ok_and_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = str(LIBRARY / "quickstart.yaml")
    assert cli.main(["validate", good]) == 0
    assert f"{good}: ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nround_policy: {deadline_s: -2}\nrounds: 0\n")
    assert cli.main(["validate", good, str(bad), str(tmp_path / "missing.yaml")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"{bad}: round_policy.deadline_s: -2 is out of range; input should be greater than 0" in err
    assert f"{bad}: rounds: 0 is out of range; input should be greater than or equal to 1" in err
    assert f"{tmp_path / 'missing.yaml'}: file not found" in err


def test_run_with_overrides_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    code = cli.main(["run", str(LIBRARY / "quickstart.yaml"), "--set", "selection.M=1",
                     "--rounds", "3", "--out", str(root)])
    assert code == 0
    assert CALLS == [("quickstart", 3, False)]
    (run_dir,) = (root / "quickstart").iterdir()
    out = capsys.readouterr().out
    assert "acc final" in out and "0.300" in out
    assert {p.name for p in (run_dir / "plots").iterdir()} >= {"accuracy_vs_round.png"}
    assert json.loads((run_dir / "summary.json").read_text())["rounds_completed"] == 3
    # resume: scenario comes from the run dir, --rounds extends it
    assert cli.main(["run", "--resume", str(run_dir), "--rounds", "5"]) == 0
    assert CALLS[-1] == ("quickstart", 5, True)
    assert "rounds: 5" in (run_dir / "scenario.yaml").read_text()
    # a different FILE with --resume is refused
    assert cli.main(["run", str(LIBRARY / "stragglers.yaml"), "--resume", str(run_dir)]) == 2
    assert "does not match" in capsys.readouterr().err


def test_run_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", str(LIBRARY / "quickstart.yaml"), "--set", "round_polcy.deadline_s=1",
                     "--out-root", str(tmp_path)]) == 2
    assert "did you mean 'round_policy'" in capsys.readouterr().err
    assert cli.main(["run"]) == 2
    assert "give a scenario FILE or --resume" in capsys.readouterr().err
    assert not CALLS


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    for seed in (0, 1):
        cli.main(["run", str(LIBRARY / "quickstart.yaml"), "--rounds", "2", "--set", f"seed={seed}",
                  "--out", str(root)])
    dirs = sorted(str(p) for p in (root / "quickstart").iterdir())
    out_dir = tmp_path / "cmp"
    capsys.readouterr()
    assert cli.main(["report", *dirs, "--out", str(out_dir)]) == 0
    assert (out_dir / "comparison.md").exists() and (out_dir / "accuracy_vs_time.png").exists()
    assert "quickstart seed=1" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_sweep_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sweep", str(LIBRARY / "dropout-sweep.yaml"), "--grid", "sim.dropout.offline=0,0.4",
                     "--seeds", "2", "--workers", "0", "--set", "rounds=2", "--out-root", str(tmp_path)])
    assert code == 0
    assert len(CALLS) == 4 and all(c[1] == 2 for c in CALLS)
    out = capsys.readouterr().out
    assert "| sim.dropout.offline | ok | failed |" in out
    assert (next((tmp_path / "dropout-sweep-sweep").iterdir()) / "comparison.png").exists()


def test_sweep_rounds_and_old_out_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["sweep", str(LIBRARY / "dropout-sweep.yaml"), "--grid", "seed=0,1",
                     "--workers", "0", "--rounds", "3", "--out-root", str(tmp_path)])
    assert code == 0
    assert [c[1] for c in CALLS] == [3, 3]
    assert "--out-root is deprecated; use --out" in capsys.readouterr().err


def test_validate_reports_everything_in_one_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nrounds: 0\nserver: {model: ./nowhere/model}\n"
        "round_policy: {quorum: 50}\n"  # cross-field: quorum > group_size
        "clients:\n  groups:\n  - {name: a, model: /no/such/dir}\n"
    )
    assert cli.main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: rounds: 0 is out of range" in err
    assert f"{bad}: round_policy.quorum: 50 is larger than server.grpo.group_size" in err
    assert f"{bad}: server.model: './nowhere/model' does not exist on this machine" in err
    assert f"{bad}: clients.groups[0].model: '/no/such/dir' does not exist" in err
    live = tmp_path / "live.yaml"
    live.write_text(
        "name: l\nmode: live\nselection: {M: 1}\nclients:\n  groups:\n"
        "  - {name: a, url: 'http://10.0.0.2:8000', token_env: NO_SUCH_TOKEN_VAR}\n"
    )
    assert cli.main(["validate", str(live)]) == 1
    err = capsys.readouterr().err
    assert "clients.groups[0].token_env: environment variable NO_SUCH_TOKEN_VAR is not set" in err
    monkeypatch.setenv("NO_SUCH_TOKEN_VAR", "t")
    assert cli.main(["validate", str(live)]) == 0
    # run refuses before creating a run directory
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR")
    assert cli.main(["run", str(live), "--out", str(tmp_path / "runs")]) == 2
    assert not (tmp_path / "runs").exists() and not CALLS


def test_empty_sections_mean_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text("name: e\nserver:\n  grpo:\nselection:\nround_policy:\n")
    assert cli.main(["validate", str(f)]) == 0
    f.write_text("name: e\nserver: 3\n")
    assert cli.main(["validate", str(f)]) == 1
    err = capsys.readouterr().err
    assert "server: 3 has the wrong type; expected a section" in err
    assert "ServerSection" not in err
