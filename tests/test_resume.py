"""Exact resume after kill -9, and checkpoints that cannot silently corrupt a run.

One run is killed with a real SIGKILL at eleven points in turn -- before the first checkpoint,
mid-round between gathering and the update, during an evaluation, and in the middle of each
file of a checkpoint write -- and resumed after each kill (so later resumes resume a resumed
run). Its final records must equal an uninterrupted run's, every field except wall-clock
``compute_s``: the simulator (split dispatch, crashes, offline devices) is restored by replaying
its journal, the selector sees the restored competence matrix, records after the checkpoint
are dropped. Models come from the tiny test zoo; rewards are format rewards of a base that
writes the format some of the time, so updates really move the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tracking_readers import mlflow_client, mlflow_steps, tb_scalars

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "resume_driver.py"
SETS = [
    "selection.dispatch=split", "clients.groups.0.reward_mode=format",
    "sim.dropout.fail=0.2", "sim.dropout.offline=0.2",
]  # fmt: skip
WALL_CLOCK = {"compute_s"}
# (point, n) in the order a run meets them; comments: where the kill lands
KILLS = [
    ("step", 1),  # round 2 starts, no checkpoint yet -> restart from round 0
    ("update", 1),  # mid-round 2, still no checkpoint
    ("write", 1),  # first checkpoint: its .sha256 half written
    ("write", 2),  # first checkpoint: the .pt half written, old latest.json
    ("write", 3),  # latest.json half written: round-00002.pt is complete and is found
    ("update", 3),  # mid-round 4
    ("eval", 1),  # during the evaluation after round 3
    ("step", 4),  # round 5 starts
    ("write", 2),  # checkpoint of round 4: .pt half written -> back to round 2
    ("update", 5),  # mid-round 6, the last one
    ("write", 3),  # the final checkpoint's latest.json (after round 6): its .pt is found
]


def _driver(run_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    sets = [a for kv in SETS for a in ("--set", kv)]
    return subprocess.run(
        [sys.executable, str(DRIVER), str(run_dir), *sets, *args],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in WALL_CLOCK} for x in lines]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = dict(os.environ)
    out["FEDGRPO_MODELS_DIR"] = str(tmp_path_factory.mktemp("models"))
    out["PYTHONPATH"] = str(ROOT)
    return out


@pytest.mark.slow
def test_killed_eleven_times_and_resumed_equals_the_straight_run(
    env: dict[str, str], tmp_path: Path
) -> None:
    sets = [a for kv in SETS for a in ("--set", kv)]
    run = tmp_path / "killed"
    straight: subprocess.Popen[str] | None = None
    log = tmp_path / "straight.log"  # a file, not a pipe: a full pipe would block the run
    for i, (point, n) in enumerate(KILLS):
        proc = _driver(run, env, "--kill", f"{point}:{n}", *(["--resume"] if i else []))
        assert proc.returncode == -9, (point, n, proc.returncode, proc.stderr[-3000:])
        if straight is None:  # the zoo and its exports exist now: run the reference alongside
            straight = subprocess.Popen(
                [sys.executable, str(DRIVER), str(tmp_path / "straight"), *sets],
                env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True,
            )
    assert straight is not None
    final = _driver(run, env, "--resume")
    assert final.returncode == 0, final.stderr[-3000:]
    assert final.stdout.strip().endswith("finished 6")
    assert straight.wait(timeout=300) == 0, log.read_text()[-3000:]
    want, got = _records(tmp_path / "straight"), _records(run)
    assert [(r["event"], r["round"]) for r in got] == [(r["event"], r["round"]) for r in want]
    for a, b in zip(want, got):
        assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    rounds = [r for r in want if r["event"] == "round"]
    assert any(r["failed"] or r["offline"] for r in rounds)  # the faults really happened
    assert any(r.get("grad_norm") for r in rounds)  # and the model really moved
    summary = json.loads((run / "summary.json").read_text())
    straight_summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["total_bytes"] == straight_summary["total_bytes"]  # nothing counted twice
    assert summary["final_mean_accuracy"] == straight_summary["final_mean_accuracy"]


@pytest.mark.slow
def test_sigterm_checkpoints_and_writes_the_summary_like_ctrl_c(
    env: dict[str, str], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    trackers = ("--set", "outputs.loggers=[tensorboard,mlflow]")  # they close and resume too
    proc = _driver(run, env, "--kill", "term:3", *trackers)
    assert proc.returncode == 130 and proc.stdout.strip().endswith("interrupted"), proc.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] == 3
    assert (run / "checkpoints" / "round-00003.pt").exists()
    assert [st for st, _ in mlflow_steps(run, "round/coverage")] == [1, 2, 3]
    final = _driver(run, env, "--resume", *trackers)
    assert final.returncode == 0 and final.stdout.strip().endswith("finished 6"), final.stderr[-2000:]
    want = [(r["round"], r["coverage"]) for r in _records(run) if r["event"] == "round"]
    assert [r for r, _ in want] == [1, 2, 3, 4, 5, 6]
    for got in (tb_scalars(run, "round/coverage"), mlflow_steps(run, "round/coverage")):
        assert got == [(r, pytest.approx(v, abs=1e-6)) for r, v in want]  # each step once
    client, run_id = mlflow_client(run)
    assert client.get_run(run_id).info.status == "FINISHED"


def test_resume_with_no_good_checkpoint_exits_with_a_clear_error(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """64 flipped bytes used to load silently and end "finished" with accuracy 0.000."""
    import fedgrpo.experiments.commands as cli
    import fedgrpo.experiments.context as context

    sys.path.insert(0, str(ROOT / "tests"))
    from resume_driver import SHRINK, tiny_spec

    monkeypatch.setattr(context, "zoo_spec", tiny_spec(context.zoo_spec))
    monkeypatch.setenv("FEDGRPO_MODELS_DIR", env["FEDGRPO_MODELS_DIR"])
    sets = [a for kv in SHRINK for a in ("--set", kv)]
    assert cli.main(["run", str(ROOT / "scenarios" / "quickstart.yaml"), "--out-root", str(tmp_path),
                     *sets, "--rounds", "2"]) == 0  # fmt: skip
    (run,) = (tmp_path / "quickstart").iterdir()
    ckpt = run / "checkpoints" / "round-00002.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 64])
    ckpt.write_bytes(bytes(data))
    capsys.readouterr()
    code = cli.main(["run", "--resume", str(run), "--rounds", "4", *sets])
    err = capsys.readouterr().err
    assert code == 2
    assert "no good checkpoint in" in err and "round-00002.pt: checksum mismatch" in err
    assert "Traceback" not in err
