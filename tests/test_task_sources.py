"""Bring your own tasks: the layouts, local files through the ``datasets`` loaders, clear
errors at validate and load time, a registered plug-in, and ``fedgrpo run`` end to end on the
shipped dataset scenario with the clients' answer tables built from the data."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.errors import DatasetError
from fedgrpo.scenarios.loader import load_scenario, validate_dict, validate_files
from fedgrpo.scenarios.task_section import build_task_suite
from fedgrpo.server.tasks import ARITHMETIC, SplitSizes, TaskSource, build_suite
from fedgrpo.server.tasks.dataset import DatasetSpec, DatasetTask
from fedgrpo.server.tasks.layouts import LayoutError, gsm8k_answer, math_answer, qa_answer

SHIPPED = Path(__file__).resolve().parent.parent / "scenarios" / "dataset-gsm8k.yaml"
SMALL = SplitSizes(train_per_domain=None, test_per_domain=3, aux_pool_per_domain=3)


def test_gsm8k_answers_drop_calculator_notes_and_separators() -> None:
    text = "Half of 48 is <<48/2=24>>24.\nThen 24+1001=<<24+1001=1025>>1025.\n#### 1,025"
    assert gsm8k_answer(text) == ("Half of 48 is 24. Then 24+1001=1025.", "1025")
    with pytest.raises(LayoutError, match="no '#### N'"):
        gsm8k_answer("just 12")
    assert gsm8k_answer("so\n#### 2.5")[1] == "5/2"
    with pytest.raises(LayoutError, match="not an answer the clients can read"):
        gsm8k_answer("so\n#### two and a half")


def test_math_answers_read_the_last_boxed_with_balanced_braces() -> None:
    assert math_answer(r"$10^3=\boxed{1{,}000}$.") == ("10^3=1{,}000.", "1000")
    assert math_answer(r"First \boxed{1}, then $\boxed{{12}}$")[1] == "12"
    assert math_answer(r"$\boxed{5\text{ cm}}$")[1] == "5"
    assert math_answer(r"\fbox{-7}")[1] == "-7"
    assert math_answer(r"$\boxed{\frac{1}{2}}$")[1] == "1/2"
    assert math_answer(r"$\boxed{\dfrac{\sqrt{3}}{2}}$")[1] == r"\frac{\sqrt{3}}{2}"
    assert math_answer(r"$\boxed{\text{odd}}$")[1] == r"\text{odd}"
    with pytest.raises(LayoutError, match=r"write a word answer as \\text"):
        math_answer(r"$\boxed{odd}$")
    with pytest.raises(LayoutError, match="never close"):
        math_answer(r"so \boxed{\frac{1}{2}")
    with pytest.raises(LayoutError, match=r"no \\boxed"):
        math_answer("the answer is 4")


def test_qa_answers_take_numbers_and_text() -> None:
    assert qa_answer(3.0) == ("3", "3")
    assert qa_answer("1,200", "600+600=1200") == ("600+600=1200", "1200")
    assert qa_answer(2.5) == ("5/2", "5/2") and qa_answer(1e-5)[1] == "1/100000"
    for bad in (float("nan"), None, True, "seven"):
        with pytest.raises(LayoutError):
            qa_answer(bad)


@pytest.mark.parametrize(
    ("spec", "domains"),
    [
        (DatasetSpec("sample:gsm8k", "gsm8k", domain_field="topic"), ("change", "sharing", "shopping")),
        (DatasetSpec("sample:math", "math", domain_field="type"), ("Algebra", "Counting & Probability", "Number Theory")),
        (DatasetSpec("sample:qa", "qa", rationale_field="working", domain="arith"), ("arith",)),
    ],
    ids=["jsonl-gsm8k", "parquet-math", "csv-qa"],
)  # fmt: skip
def test_shipped_samples_load_and_split_disjoint_and_seeded(
    spec: DatasetSpec, domains: tuple[str, ...]
) -> None:
    task = DatasetTask(spec)
    suite = task.build_suite((), SMALL, seed=0)
    assert suite.domains == domains and suite.task is task
    for name in domains:
        train, test, aux = ({i.question for i in split(name)} for split in (suite.train, suite.test, suite.aux_pool))
        assert len(test) == 3 and len(aux) == 3 and train
        assert not (train & test or train & aux or test & aux)
    again = DatasetTask(spec).build_suite((), SMALL, seed=0)
    assert again.test() == suite.test() and again.train() == suite.train()
    assert DatasetTask(spec).build_suite((), SMALL, seed=1).test() != suite.test()
    for item in suite.train():  # the completion is the one answer format the clients read
        assert task.follows_format(item.completion) and task.is_correct(item.completion, item.answer)


def _scenario(source: dict[str, Any], **tasks: Any) -> dict[str, Any]:
    return {"name": "byo", "tasks": {"source": source, "test_per_domain": 2, "aux_pool_per_domain": 2, **tasks},
            "selection": {"aux_size": 4, "L": 2}}  # fmt: skip


def _problems(tmp_path: Path, data: dict[str, Any]) -> list[str]:
    path = tmp_path / f"s{len(list(tmp_path.glob('s*.yaml')))}.yaml"
    path.write_text(json.dumps(data))
    return validate_files([path], environment=True)[str(path)]


def test_validate_names_the_file_and_the_field_for_bad_data(tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    csv.write_text("prompt,answer\nWhat is 2 plus 2?,4\n")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text('{"question": "q1", "answer": "1+1=2\\n#### 2"}\n{"question": "q2", "answer": "no final"}\n')
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    cases = [
        ({"kind": "dataset", "path": str(csv)}, {}, f"tasks.source.question_field: {csv}: column 'question' not found"),
        ({"kind": "dataset", "path": str(gsm), "layout": "gsm8k"}, {}, f"tasks.source.answer_field: {gsm}: row 2: column 'answer' has no '#### N'"),
        ({"kind": "dataset", "path": "sample:gsm8k", "layout": "gsm8k"}, {"test_per_domain": 40}, "tasks.test_per_domain: "),
        ({"kind": "dataset", "path": "sample:qa", "layout": "csv"}, {}, "tasks.source.layout: 'csv' is not allowed; allowed: gsm8k, math, qa"),
        ({"kind": "dataset", "path": str(tmp_path / "nope.jsonl")}, {}, "tasks.source.path: "),
        ({"kind": "dataset", "path": str(broken)}, {}, "cannot be read as json"),
        ({"kind": "dataset"}, {}, "tasks.source.path: kind dataset needs the data file"),
        ({"kind": "dataset", "path": "sample:math", "layout": "math", "domain_field": "type"}, {"domains": ["Geometry"]}, "tasks.domains: "),
        ({"kind": "plugin", "task": "no-such-task"}, {}, "tasks.source.task: task 'no-such-task' is not registered"),
        ({"kind": "builtin", "path": "x.csv"}, {}, "tasks.source.path: is not used with kind 'builtin'"),
    ]  # fmt: skip
    for source, tasks, expected in cases:
        problems = _problems(tmp_path, _scenario(source, **tasks))
        assert any(expected in p for p in problems), (expected, problems)


def test_unreadable_answers_error_or_are_skipped(tmp_path: Path) -> None:
    rows = [{"problem": f"p{k}", "solution": f"$\\boxed{{{k}}}$"} for k in range(8)]
    rows[3]["solution"] = r"$\boxed{seven}$"
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match=r"row 4: column 'solution' the boxed answer") as exc:
        DatasetTask(DatasetSpec(str(path), "math"))
    assert exc.value.field == "answer_field"
    skipping = DatasetTask(DatasetSpec(str(path), "math", on_bad_answer="skip"))
    assert skipping.skipped == 1 and len(list(skipping.items())) == 7


def test_run_refuses_bad_data_with_one_line_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedgrpo.experiments.cli import main

    csv = tmp_path / "rows.csv"
    csv.write_text("question,answer\nWhat is 2 plus 2?,four\n")
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(_scenario({"kind": "dataset", "path": str(csv)})))
    assert main(["run", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert f"tasks.source.answer_field: {csv}: row 1: column 'answer'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


def test_a_registered_plugin_task_is_used_from_a_scenario() -> None:
    data = _scenario({"kind": "plugin", "task": "digits", "import": "task_plugin_example", "options": {"count": 20}})
    s = validate_dict(data)
    assert s.tasks.domains == []  # every domain the task has
    suite = build_task_suite(s)
    assert suite.domains == ("digitsum", "maxdigit") and len(suite.train("digitsum")) == 16
    assert type(suite.task).__name__ == "DigitTask"
    by_path = validate_dict(_scenario({"kind": "plugin", "task": "task_plugin_example:DigitTask"}))
    assert build_task_suite(by_path).test() == build_task_suite(validate_dict(_scenario(
        {"kind": "plugin", "task": "digits", "import": "task_plugin_example"}))).test()  # fmt: skip
    with pytest.raises(DatasetError, match=r"bad tasks\.source\.options"):
        build_task_suite(validate_dict(_scenario({"kind": "plugin", "task": "digits", "import": "task_plugin_example", "options": {"size": 3}})))  # fmt: skip


def test_builtin_arithmetic_is_one_task_with_its_splits_and_digests_unchanged() -> None:
    from fedgrpo.server.zoo.recipes import ZooSpec

    sizes = SplitSizes(50, 20, 10)
    new, old = ARITHMETIC.build_suite(("add", "mul"), sizes, 3), build_suite(["add", "mul"], 3, 50, 20, 10)
    assert new.train() == old.train() and new.test() == old.test() and new.aux_pool() == old.aux_pool()
    assert old.task is ARITHMETIC
    for recipe in ZooSpec().recipes():  # no task key: every built-in recipe digest as before
        assert "source" not in recipe.to_dict()["data"]["suite"]


def test_dataset_models_follow_the_items_not_the_path(tmp_path: Path) -> None:
    from fedgrpo.server.zoo.recipes import SuiteSpec, ZooSpec

    def keys(path: Path) -> list[str]:
        source = TaskSource("dataset", DatasetSpec(str(path), "gsm8k", domain_field="topic"))
        suite = SuiteSpec(domains=(), test_per_domain=3, aux_pool_per_domain=3, source=source)
        return [r.cache_key for r in ZooSpec(suite=suite, partition=replace(ZooSpec().partition, num_clients=3)).recipes()]

    sample = Path(DatasetTask(DatasetSpec("sample:gsm8k", "gsm8k")).source)
    a, b = tmp_path / "a.jsonl", tmp_path / "b" / "copy.jsonl"
    b.parent.mkdir()
    shutil.copy(sample, a)
    shutil.copy(sample, b)
    assert keys(a) == keys(b)
    b.write_text(b.read_text().replace("#### 9", "#### 10", 1))
    assert keys(a)[0] != keys(b)[0]  # an edited answer means a newly trained base


@pytest.fixture
def tiny_zoo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    from tiny_zoo import tiny_spec

    import fedgrpo.experiments.context as context

    monkeypatch.setattr(context, "zoo_spec", tiny_spec(context.zoo_spec))
    return tmp_path / "models"


def test_fedgrpo_run_on_the_shipped_dataset_scenario_with_exact_client_rewards(
    tiny_zoo: Path, tmp_path: Path
) -> None:
    import torch

    import fedgrpo.experiments.context as context
    from fedgrpo.edge.scorer import EdgeScorer
    from fedgrpo.experiments.cli import main
    from fedgrpo.server.zoo.build import train_recipe
    from fedgrpo.server.zoo.cache import ModelCache

    sets = ["server.grpo.questions_per_round=2", "server.grpo.group_size=3", "server.grpo.max_new_tokens=8",
            "eval.every=1", "checkpoint.every=1", "outputs.progress=false", "outputs.plots=false"]  # fmt: skip
    # the same zoo the run asks for, trained here on one thread (no trainer processes to start)
    torch.set_num_threads(1)
    recipes = context.zoo_spec(load_scenario(SHIPPED, sets)).recipes()
    assert [r.name for r in recipes] == ["server-base", "expert-0", "expert-1", "expert-2"]
    for recipe in recipes:
        ModelCache(tiny_zoo).get_or_build(recipe, train_recipe)
    argv = ["run", str(SHIPPED), "--rounds", "2", "--out", str(tmp_path / "runs"), "--models-dir", str(tiny_zoo)]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    (run_dir,) = (tmp_path / "runs" / "dataset-gsm8k").iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in records if r["event"] == "round"]
    evals = [r for r in records if r["event"] == "eval"]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["coverage"] == 1.0 for r in rounds)
    assert sorted(evals[0]["accuracy"]) == ["change", "sharing", "shopping"] and len(evals[0]["correct_items"]) == 9
    # each client holds its topic's training questions with their answers (its answer table):
    # it rewards a candidate 1 exactly when the candidate's answer is the data's
    s = load_scenario(SHIPPED)
    from fedgrpo.scenarios.loader import load_run_scenario

    assert load_run_scenario(run_dir).tasks == s.tasks  # the resolved file reads back (resume)
    suite = build_task_suite(s)
    onnx = sorted((tiny_zoo / "onnx").iterdir())
    scorer = EdgeScorer.load(next(p for p in onnx if p.name.startswith("expert-0")))
    held = suite.train(suite.domains[0])
    assert len(scorer.answers) == len(held)
    item = held[0]
    wrong = item.completion.replace(f"answer: {item.answer}", f"answer: {int(item.answer) + 1}")
    assert scorer.score([item.question] * 2, [item.completion, wrong], "answer") == [1.0, 0.0]
    other = suite.train(suite.domains[1])[0]  # not held: explicit AE scores 0, auto asks the model
    assert scorer.score([other.question], [other.completion], "answer") == [0.0]
