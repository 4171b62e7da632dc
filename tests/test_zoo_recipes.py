"""Recipe options that change what the zoo trains: off-format noise and the LR floor."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedgrpo.edge.answer_format import extract_answer, follows_format
from fedgrpo.errors import ConfigError
from fedgrpo.server.zoo.recipes import DataSpec, ModelRecipe, SuiteSpec, ZooSpec
from fedgrpo.server.zoo.train import TrainConfig

SMALL = SuiteSpec(train_per_domain=200, test_per_domain=5, aux_pool_per_domain=5)


def test_format_noise_rewrites_a_seeded_fraction_of_final_lines() -> None:
    clean = DataSpec(suite=SMALL).items()
    noisy = DataSpec(suite=SMALL, format_noise=0.5).items()
    assert noisy == DataSpec(suite=SMALL, format_noise=0.5).items()  # deterministic
    assert [(i.question, i.answer) for i in noisy] == [(i.question, i.answer) for i in clean]
    off = [i for i in noisy if not follows_format(i.completion)]
    assert 0.4 < len(off) / len(noisy) < 0.6
    for item in off:
        assert extract_answer(item.completion) is None  # the checker cannot read "so N"
        assert item.completion.endswith(f"\nso {item.answer}")
    assert all(follows_format(i.completion) for i in clean)


def test_format_noise_out_of_range_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"format_noise must be in \[0, 1\]"):
        DataSpec(suite=SMALL, format_noise=1.5).items()


def test_defaults_leave_recipe_digests_alone_and_options_change_them() -> None:
    base = ModelRecipe(name="m", role="server_base")
    same = replace(base, train=TrainConfig(final_lr_fraction=0.1), data=DataSpec(format_noise=0.0))
    assert same.digest() == base.digest()
    assert "format_noise" not in base.to_dict()["data"]
    assert "final_lr_fraction" not in base.to_dict()["train"]
    assert replace(base, train=TrainConfig(final_lr_fraction=0.5)).digest() != base.digest()
    assert replace(base, data=DataSpec(format_noise=0.5)).digest() != base.digest()


def test_default_zoo_base_learns_misconceptions_in_the_clean_format() -> None:
    (base,) = [r for r in ZooSpec().recipes() if r.role == "server_base"]
    assert base.data.misconception_rate == 0.7
    assert base.data.format_noise == 0.0
    noisy = next(r for r in ZooSpec(base_format_noise=0.5).recipes() if r.role == "server_base")
    assert noisy.data.format_noise == 0.5 and noisy.cache_key != base.cache_key


def test_misconception_rate_rewrites_a_seeded_fraction_into_the_domain_slip() -> None:
    clean = DataSpec(suite=SMALL).items()
    slipped = DataSpec(suite=SMALL, misconception_rate=0.7).items()
    assert slipped == DataSpec(suite=SMALL, misconception_rate=0.7).items()  # deterministic
    assert [i.question for i in slipped] == [i.question for i in clean]
    wrong = [i for i, c in zip(slipped, clean) if i.answer != c.answer]
    sort_items = [i for i in slipped if i.domain == "sort"]
    sort_wrong = [i for i in sort_items if i.answer != "".join(sorted(i.question.split()[1]))]
    assert 0.6 < len(sort_wrong) / len(sort_items) < 0.8  # sorting always differs when slipped
    assert wrong and all(follows_format(i.completion) for i in slipped)
    with pytest.raises(ConfigError, match=r"misconception_rate must be in \[0, 1\]"):
        DataSpec(suite=SMALL, misconception_rate=2.0).items()
    assert "misconception_rate" not in ModelRecipe("m", "expert").to_dict()["data"]


def test_expert_quality_changes_recipes_but_not_names() -> None:
    from fedgrpo.server.zoo.recipes import PartitionSpec

    part = PartitionSpec(num_clients=3)
    plain = ZooSpec(suite=SMALL, partition=part)
    mixed = ZooSpec(suite=SMALL, partition=part, expert_quality=("strong", "weak", "wrong"))
    a = {r.name: r for r in plain.recipes()}
    b = {r.name: r for r in mixed.recipes()}
    assert list(a) == list(b) == ["server-base", "expert-0", "expert-1", "expert-2"]
    assert a["expert-0"].cache_key == b["expert-0"].cache_key
    assert b["expert-1"].train.steps == mixed.weak_steps < a["expert-1"].train.steps
    assert b["expert-2"].data.misconception_rate == 1.0
    table = b["expert-2"].data.items()  # a wrong expert's answer table holds the slips
    assert all(i.answer != c.answer for i, c in zip(table, a["expert-2"].data.items()) if i.domain == "mod")
    with pytest.raises(ConfigError, match="one quality per partition"):
        ZooSpec(suite=SMALL, partition=part, expert_quality=("weak",)).recipes()
    with pytest.raises(ConfigError, match="unknown"):
        ZooSpec(suite=SMALL, partition=part, expert_quality=("a", "b", "c")).recipes()
