"""Recipe options that change what the zoo trains: off-format noise and the LR floor."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edge.answer_format import extract_answer, follows_format
from server.errors import ConfigError
from server.zoo.recipes import DataSpec, ModelRecipe, SuiteSpec, ZooSpec
from server.zoo.train import TrainConfig

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


def test_default_zoo_base_keeps_half_its_learning_rate_and_clean_format() -> None:
    (base,) = [r for r in ZooSpec().recipes() if r.role == "server_base"]
    assert base.train.final_lr_fraction == 0.5
    assert base.data.format_noise == 0.0
    noisy = next(r for r in ZooSpec(base_format_noise=0.5).recipes() if r.role == "server_base")
    assert noisy.data.format_noise == 0.5 and noisy.cache_key != base.cache_key
