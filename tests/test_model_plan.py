"""Hidden model training is announced: which models, about how long, how to prebuild."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from fedgrpo.experiments.prebuild import prebuild_models, zoo_recipes
from fedgrpo.scenarios.loader import load_scenario
from fedgrpo.server.zoo.architectures import TinyArch
from fedgrpo.server.zoo.commands import build_default_zoo
from fedgrpo.server.zoo.plan import CALIBRATED_S_PER_STEP, announcement, makespan, plan_build
from fedgrpo.server.zoo.recipes import PartitionSpec, SuiteSpec, ZooSpec
from fedgrpo.server.zoo.train import TrainConfig

QUICKSTART = Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.yaml"
TINY = TinyArch(layers=1, hidden=32, heads=2, max_positions=64)
SPEC = ZooSpec(
    suite=SuiteSpec(
        domains=("add", "sort"), train_per_domain=40, test_per_domain=10, aux_pool_per_domain=10
    ),
    partition=PartitionSpec(num_clients=1),
    expert_arch=TINY,
    expert_train=TrainConfig(steps=2, batch_size=8),
    base_arch=TINY,
    base_train=TrainConfig(steps=3, batch_size=8),
)


def test_a_client_count_change_announces_the_new_experts_and_their_time(tmp_path: Path) -> None:
    """quickstart with 7 clients in an empty cache: the base and 7 experts, timed from the
    calibrated cost, 2 at a time (the base first): 437.5 s at 0.35 s/step."""
    s = load_scenario(QUICKSTART, ["clients.groups.0.count=7"])
    plan = plan_build(zoo_recipes([s]), tmp_path, workers=2)
    assert [r.name for r in plan.missing] == ["server-base", *(f"expert-{k}" for k in range(7))]
    assert plan.s_per_step == CALIBRATED_S_PER_STEP
    c = CALIBRATED_S_PER_STEP
    assert plan.estimate_s == pytest.approx(makespan([600 * c] + [250 * c] * 7, 2))
    assert makespan([600 * c] + [250 * c] * 7, 2) == pytest.approx(1250 * c)  # by hand
    text = announcement(plan, tmp_path)
    assert f"training 8 models missing from {tmp_path}" in text and "about 7 min" in text
    assert "expert-6" in text and "fedgrpo models build SCENARIO" in text
    assert "calibrated" in text


def test_real_build_says_what_it_trains_then_measures_its_own_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_default_zoo(tmp_path, SPEC, workers=1)
    err = capsys.readouterr().err
    assert re.search(r"training 2 models missing .* \(0 cached\)", err)
    assert "calibrated" in err and re.search(r"server-base +3 steps", err)

    bigger = replace(SPEC, partition=PartitionSpec(num_clients=2))  # 2 clients: new experts
    assert plan_build(bigger.recipes(), tmp_path).cost_source.startswith("calibrated")
    plan = plan_build(bigger.recipes(), tmp_path, min_steps=1)  # let 2-3 steps count here
    assert [r.name for r in plan.missing] == ["expert-0", "expert-1"]
    assert plan.cached == 1 and plan.cost_source == "measured on 2 models in this cache"
    assert plan.s_per_step != CALIBRATED_S_PER_STEP and plan.s_per_step > 0

    build_default_zoo(tmp_path, SPEC, workers=1)  # everything cached: nothing announced
    assert "training" not in capsys.readouterr().err


def test_sweep_prebuild_takes_each_model_once(tmp_path: Path) -> None:
    five = load_scenario(QUICKSTART)
    seven = load_scenario(QUICKSTART, ["clients.groups.0.count=7"])
    names = [r.name for r in zoo_recipes([five, seven, five])]
    assert names.count("server-base") == 1 and len(names) == 1 + 5 + 7
    timing = load_scenario(QUICKSTART, ["sim.reward_source=timing"])
    assert zoo_recipes([timing]) == []
    prebuild_models([timing])  # nothing to train: returns at once
