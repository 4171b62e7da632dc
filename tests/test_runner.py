"""The shipped scenarios through the real runner (sim mode), shrunk to a few rounds.

Models come from a tiny zoo (1 layer, 32 wide, a few SFT steps) built once per session, so
the whole path — zoo build, ONNX export where needed, competence enrolment, selection,
gathering, GRPO update, evaluation, checkpoints, metrics, plots, resume — runs for real in
seconds. Whether training *helps* is tested in ``test_learning.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.scenarios.loader import load_scenario

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
# live needs devices, emulate and dataset-gsm8k have their own end-to-end tests
# (test_emulate.py, test_task_sources.py); dataset-math (about 50 s, over the suite's budget)
# is covered piecewise by test_answer_values.py and the wire test in test_edge_service.py
# smollm2 is the slow model test
CHEAP = [
    p.stem
    for p in sorted(LIBRARY.glob("*.yaml"))
    if p.stem not in {"live-template", "emulate-local", "smollm2", "dataset-gsm8k", "dataset-math"}
]
SHRINK = [
    "rounds=2", "selection.aux_size=6", "selection.L=3",
    "server.grpo.questions_per_round=2", "server.grpo.group_size=3",
    "server.grpo.max_new_tokens=8",
    "tasks.train_per_domain=40", "tasks.test_per_domain=4", "tasks.aux_pool_per_domain=4",
    "eval.per_domain=2", "eval.every=1", "checkpoint.every=1", "outputs.progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tiny_zoo import use_tiny_zoo

    mp = pytest.MonkeyPatch()
    use_tiny_zoo(mp, tmp_path_factory.mktemp("models"), weak_steps=3, sized=True)
    yield
    mp.undo()


def _shrunk(name: str, extra: list[str] = ()) -> Any:  # type: ignore[assignment]
    s = load_scenario(LIBRARY / f"{name}.yaml", [])
    sets = list(SHRINK)
    if not s.models_needed:  # timing-only: keep the fleet, just fewer rounds
        sets = ["rounds=2", "outputs.progress=false"]
    return load_scenario(LIBRARY / f"{name}.yaml", [*sets, *extra])


@pytest.mark.parametrize("name", CHEAP)
def test_shipped_scenario_runs(name: str, tiny_zoo: None, tmp_path: Path) -> None:
    from fedgrpo.experiments.runner import run_scenario

    s = _shrunk(name)
    summary = run_scenario(s, tmp_path / "run")
    assert summary["status"] == "finished" and summary["rounds_completed"] == 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    rounds = [r for r in records if r.get("event") == "round"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert all(r["duration_s"] >= 0 for r in rounds)
    if s.models_needed:
        evals = [r for r in records if r.get("event") == "eval"]
        assert [e["round"] for e in evals] == [0, 1, 2]
        assert len(evals[0]["correct_items"]) == 2 * len(s.tasks.domains)
        change = summary["accuracy_change"]
        assert change["items"] == 2 * len(s.tasks.domains)
        assert 0.0 <= change["p_value"] <= 1.0
        assert (tmp_path / "run" / "checkpoints" / "latest.json").exists()
        from transformers import AutoModelForCausalLM

        final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final_model")
        assert final.num_parameters() > 0  # the trained policy, as a HF directory
        if s.selection.selector == "confidence_graph":
            matrix = json.loads((tmp_path / "run" / "competence.json").read_text())
            assert matrix  # the graph's K x |D_aux| competence matrix is saved with the run


def test_interrupted_run_resumes_to_the_same_metrics(tiny_zoo: None, tmp_path: Path) -> None:
    """Stop after round 2 of 4, resume (broadcast dispatch): the records equal a straight run."""
    from fedgrpo.experiments.runner import run_scenario

    straight = run_scenario(_shrunk("quickstart", ["rounds=4"]), tmp_path / "a")
    run_scenario(_shrunk("quickstart", ["rounds=2"]), tmp_path / "b")
    resumed = run_scenario(_shrunk("quickstart", ["rounds=4"]), tmp_path / "b", resume=True)
    assert straight["final_mean_accuracy"] == resumed["final_mean_accuracy"]

    def rows(d: Path) -> list[dict[str, Any]]:  # every field but wall-clock compute_s
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "compute_s"} for x in lines]

    assert rows(tmp_path / "a") == rows(tmp_path / "b")


def test_cli_run_prints_before_and_after(
    tiny_zoo: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fedgrpo.experiments.commands as cli

    code = cli.main(
        ["run", str(LIBRARY / "quickstart.yaml"), "--out-root", str(tmp_path),
         *[a for kv in SHRINK for a in ("--set", kv)]]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "before (round 0)" in out and "after (round 2)" in out
    assert "paired sign test on 10 test items" in out
    (run_dir,) = (tmp_path / "quickstart").iterdir()
    assert (run_dir / "plots" / "accuracy_vs_round.png").stat().st_size > 5_000


def test_graph_show_prints_neighbours_routing_and_saves_the_matrix(
    tiny_zoo: None, tmp_path: Path
) -> None:
    from fedgrpo.experiments.graph import show_graph

    s = _shrunk("quickstart")
    text = show_graph(s, questions=3, neighbours=2, save=tmp_path / "competence.json")
    assert "confidence graph of 'quickstart': 5 clients x 6 auxiliary exemplars" in text
    assert "routing over all 20 test questions: the top expert holds" in text
    assert text.count("\nQ: ") == 3 and text.count("   neighbour ") == 6
    assert text.count("   experts: ") == 3
    saved = json.loads((tmp_path / "competence.json").read_text())
    assert saved  # the K x |D_aux| matrix, loadable by CompetenceMatrix.from_json


def test_a_run_that_dies_is_recorded_as_failed_with_its_error(
    tiny_zoo: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedgrpo.experiments.runner import run_scenario
    from fedgrpo.server.trainer import FedGRPOTrainer

    step = FedGRPOTrainer.step

    def dying(self: FedGRPOTrainer) -> dict[str, Any]:
        if self.state.round == 1:
            raise BrokenPipeError("[Errno 32] Broken pipe")
        return step(self)

    monkeypatch.setattr(FedGRPOTrainer, "step", dying)
    with pytest.raises(BrokenPipeError):
        run_scenario(_shrunk("quickstart"), tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["rounds_completed"] == 1
    assert summary["error"] == "BrokenPipeError: [Errno 32] Broken pipe"


def test_models_build_takes_a_scenario(
    tiny_zoo: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from fedgrpo.experiments.cli import main

    shrunk = tmp_path / "pop.yaml"
    text = (LIBRARY / "population.yaml").read_text().replace("train_per_domain: 2000", "train_per_domain: 40")
    shrunk.write_text(text.replace("name: population", "name: pop"))
    assert main(["models", "build", str(shrunk), "--models-dir", os.environ["FEDGRPO_MODELS_DIR"]]) == 0
    out = capsys.readouterr().out
    assert "21 models ready" in out and "expert-19" in out


@pytest.mark.parametrize(
    ("name", "sets"),
    [("async-staleness", []), ("async-staleness", ["round_policy.min_update_groups=4"]),
     ("stragglers", [])],
    ids=["async", "async-fedbuff", "stragglers"],
)  # fmt: skip
def test_resume_is_exact_in_async_mode_and_under_stragglers(
    name: str, sets: list[str], tiny_zoo: None, tmp_path: Path
) -> None:
    """Every field of every record (but wall-clock compute_s) equals the uninterrupted run
    (with FedBuff's buffer: groups waiting in it at the checkpoint are resumed too)."""
    from fedgrpo.experiments.runner import run_scenario

    extra = ["rounds=4", "eval.every=2", "checkpoint.every=2", *sets]
    run_scenario(_shrunk(name, extra), tmp_path / "a")
    run_scenario(_shrunk(name, [*extra, "rounds=2"]), tmp_path / "b")
    run_scenario(_shrunk(name, extra), tmp_path / "b", resume=True)

    def rows(d: Path) -> list[dict[str, Any]]:
        lines = (d / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "compute_s"} for x in lines]

    assert rows(tmp_path / "a") == rows(tmp_path / "b")


def test_progress_is_a_bar_on_a_tty_only_else_one_line_per_eval(
    tiny_zoo: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedgrpo.experiments.runner import run_scenario

    s = _shrunk("quickstart", ["rounds=3", "eval.every=2", "outputs.progress=true"])
    run_scenario(s, tmp_path / "run")  # capsys: stderr is not a TTY
    err = capsys.readouterr().err
    assert "\r" not in err and "it/s" not in err and "round/s" not in err  # no tqdm bar
    lines = [ln for ln in err.splitlines() if ln.startswith("[quickstart] round ")]
    assert [ln.split()[2] for ln in lines] == ["2/3", "3/3"]  # every eval.every rounds + last
    assert all("reward=" in ln and "acc=" in ln for ln in lines)


ASYNC_SMALL = [
    "rounds=6", "selection.aux_size=6", "selection.L=3", "server.grpo.questions_per_round=3",
    "server.grpo.group_size=4", "server.grpo.max_new_tokens=8", "tasks.train_per_domain=40",
    "tasks.test_per_domain=4", "tasks.aux_pool_per_domain=4", "eval.per_domain=2",
    "eval.every=0", "checkpoint.every=0", "outputs.progress=false", "outputs.plots=false",
    "outputs.save_model=false",
]  # fmt: skip


def test_shipped_async_scenario_trains_on_late_rewards_in_sim(tiny_zoo: None, tmp_path: Path) -> None:
    """Issue 14: the shipped async scenario produces late rewards and they enter updates
    through the off-policy loss, with the per-round late-reward records."""
    from fedgrpo.experiments.runner import run_scenario

    s = load_scenario(LIBRARY / "async-staleness.yaml", ASYNC_SMALL)
    assert run_scenario(s, tmp_path / "run")["status"] == "finished"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rounds = [r for r in map(json.loads, lines) if r.get("event") == "round"]
    assert sum(r["late_rewards"] for r in rounds) > 0  # the shipped scenario produces them
    used = [r for r in rounds if r["stale_groups_used"] > 0]
    assert used, "no late group entered an update"
    for r in used:
        assert r["updated"] and sum(r["staleness_hist"].values()) == r["stale_groups_used"]
        assert all(1 <= int(k) <= s.round_policy.max_staleness for k in r["staleness_hist"])
        assert 0.0 < r["grpo_ess"] <= 1.0 and r["grpo_stale_sequences"] > 0
    assert all(r["groups_held"] >= 0 and r["stale_groups_dropped"] >= 0 for r in rounds)
    # without FedBuff's buffer a round updates on whatever is ready, often fewer groups
    # than a synchronous round has (the control for the buffer test below)
    assert any(r["updated"] and r["groups_trained"] < 3 for r in rounds)


def test_fedbuff_buffer_updates_only_once_k_groups_are_ready(tiny_zoo: None, tmp_path: Path) -> None:
    """``round_policy.min_update_groups: K``: no update until K groups (fresh or late) are
    ready; until then they wait in the buffer, then enter one update together (the fresh
    ones at staleness 0: no update happened while they waited)."""
    from fedgrpo.experiments.runner import run_scenario

    sets = [*ASYNC_SMALL, "rounds=8", "round_policy.min_update_groups=4"]
    s = load_scenario(LIBRARY / "async-staleness.yaml", sets)
    assert run_scenario(s, tmp_path / "run")["status"] == "finished"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rounds = [r for r in map(json.loads, lines) if r.get("event") == "round"]
    updated = [r for r in rounds if r["updated"]]
    assert updated and all(r["groups_trained"] >= 4 for r in updated)
    assert any(not r["updated"] and r["groups_buffered"] > 0 for r in rounds)
    assert all(r["groups_trained"] == 0 for r in rounds if r["groups_buffered"] and not r["updated"])
    assert any("0" in r["staleness_hist"] for r in updated)  # waited fresh groups, not stale
    assert len(updated) <= len(rounds) / 2  # 3 questions a round: >= 2 rounds per update
