"""Masked group-relative advantages: TRL equivalence without missing rewards, masking with."""

from __future__ import annotations

import math

import pytest
import torch

from fedgrpo.errors import ConfigError
from fedgrpo.server.grpo.advantages import group_advantages


def trl_advantages(rewards: torch.Tensor, scale: str) -> torch.Tensor:
    """TRL GRPOTrainer._generate_and_score_completions, written from its formulas:
    mean per group; std = torch.std (unbiased) per group or over the whole batch;
    A = (r - mean) / (std + 1e-4), or r - mean for scale_rewards='none'."""
    g = rewards.shape[1]
    flat = rewards.reshape(-1)
    mean = rewards.mean(1).repeat_interleave(g)
    adv = flat - mean
    if scale == "group":
        adv = adv / (rewards.std(1).repeat_interleave(g) + 1e-4)
    elif scale == "batch":
        adv = adv / (flat.std() + 1e-4)
    return adv.view_as(rewards)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_trl_without_missing(scale: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.rand(5, 8, generator=gen)
    rewards[0] = (rewards[0] > 0.5).float()  # binary rewards, like AE scoring
    adv, eff = group_advantages(rewards, scale=scale)
    torch.testing.assert_close(adv, trl_advantages(rewards, scale), rtol=1e-5, atol=1e-6)
    assert eff.all()


def test_missing_reward_is_not_a_zero() -> None:
    # group of 4, candidate 3 never answered. Masked: stats over [1, 0, 1].
    r = torch.tensor([[1.0, 0.0, 1.0, float("nan")]])
    adv, eff = group_advantages(r, scale="none")
    torch.testing.assert_close(adv, torch.tensor([[1 / 3, -2 / 3, 1 / 3, 0.0]]))
    assert eff.tolist() == [[True, True, True, False]]
    # the official code's zero would give mean 0.5 and a spurious +0.5 to each correct one
    zeroed, _ = group_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0]]), scale="none")
    assert zeroed[0, 0].item() == pytest.approx(0.5)
    # with std: mean 2/3, unbiased std sqrt(1/3)
    adv_g, _ = group_advantages(r, scale="group")
    std = math.sqrt(1 / 3)
    expected = [(1 / 3) / (std + 1e-4), (-2 / 3) / (std + 1e-4), (1 / 3) / (std + 1e-4), 0.0]
    torch.testing.assert_close(adv_g[0], torch.tensor(expected))


def test_missing_equals_dropping_the_candidate() -> None:
    gen = torch.Generator().manual_seed(3)
    r = torch.rand(3, 6, generator=gen)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 2] = False
    r_nan = r.clone()
    r_nan[1, 2] = 1e6  # garbage in a masked slot must not matter
    adv, eff = group_advantages(r_nan, mask, scale="group")
    kept = torch.cat([r[1, :2], r[1, 3:]])[None]
    ref, _ = group_advantages(kept, scale="group")
    torch.testing.assert_close(torch.cat([adv[1, :2], adv[1, 3:]]), ref[0])
    assert adv[1, 2].item() == 0.0 and not eff[1, 2]
    torch.testing.assert_close(adv[0], trl_advantages(r[:1], "group")[0])


def test_all_missing_and_single_rewarded_groups_contribute_nothing() -> None:
    nan = float("nan")
    r = torch.tensor([[nan, nan, nan], [nan, 0.7, nan], [0.0, 1.0, nan]])
    for scale in ("group", "batch", "none"):
        adv, eff = group_advantages(r, scale=scale)
        assert not torch.isnan(adv).any()
        assert adv[:2].abs().sum().item() == 0.0
        assert not eff[:2].any()
        assert eff[2].tolist() == [True, True, False]


def test_zero_variance_and_ties() -> None:
    r = torch.tensor([[0.1, 0.1, 0.1, 0.1], [1.0, 1.0, 0.0, 0.0]])
    for scale in ("group", "batch", "none"):
        adv, eff = group_advantages(r, scale=scale)
        assert adv[0].abs().sum().item() == 0.0  # exactly zero, no NaN
        assert eff[0].all()  # still in the loss (KL, denominators) as in TRL
        assert adv[1, 0] == adv[1, 1] > 0 > adv[1, 2] == adv[1, 3]


def test_batch_std_uses_only_effective_candidates() -> None:
    nan = float("nan")
    r = torch.tensor([[0.0, 1.0, nan], [5.0, nan, nan]])  # second group ineffective
    adv, _ = group_advantages(r, scale="batch")
    std = torch.tensor([0.0, 1.0]).std()
    torch.testing.assert_close(adv[0, :2], torch.tensor([-0.5, 0.5]) / (std + 1e-4))


def test_bad_scale_names_allowed_values() -> None:
    with pytest.raises(ConfigError, match="allowed"):
        group_advantages(torch.zeros(2, 2), scale="global")


def test_extreme_rewards_nan_free() -> None:
    r = torch.tensor([[1e30, -1e30, 0.0], [1e-30, 0.0, 1e-30]])
    for scale in ("group", "batch", "none"):
        adv, _ = group_advantages(r, scale=scale)
        assert torch.isfinite(adv).all()


def test_numpy_inputs_and_pipeline_from_combine() -> None:
    import numpy as np

    from fedgrpo.server.grpo.rewards import combine, split_missing

    table = np.array([[1.0, np.nan], [0.0, 0.0], [np.nan, np.nan], [1.0, 0.0]])
    values, mask = split_missing(combine(table))
    adv, eff = group_advantages(values[None], mask[None], scale="none")
    torch.testing.assert_close(adv, torch.tensor([[0.5, -0.5, 0.0, 0.0]], dtype=adv.dtype))
    assert eff.tolist() == [[True, True, False, True]]


def test_mask_shape_checked() -> None:
    with pytest.raises(ConfigError, match="mask shape"):
        group_advantages(torch.zeros(2, 3), torch.ones(1, 3, dtype=torch.bool))
