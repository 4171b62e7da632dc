"""The decoupled truncated-IS GRPO loss for late rewards (server/grpo/offpolicy.py)."""

from __future__ import annotations

import math

import pytest
import torch

from fedgrpo.errors import ConfigError
from fedgrpo.server.grpo import grpo_loss
from fedgrpo.server.grpo.offpolicy import LateRewardConfig, offpolicy_grpo_loss

N, T = 6, 5


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logps = (-torch.rand(N, T, generator=g) * 3).requires_grad_(True)
    old = logps.detach() + 0.3 * torch.randn(N, T, generator=g)
    mask = torch.ones(N, T)
    mask[1, 3:] = 0
    mask[4, 1:] = 0
    adv = torch.randn(N, generator=g)
    return {"logps": logps, "old": old, "mask": mask, "adv": adv}


def grads(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x)
    return g


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
def test_staleness_zero_equals_the_on_policy_loss_exactly(loss_type: str) -> None:
    x = inputs()
    seq_mask = torch.tensor([True, True, False, True, True, True])
    ref = x["old"] - 0.1
    kw = dict(eps_low=0.2, eps_high=0.3, beta=0.05, loss_type=loss_type, max_completion_length=T)
    on, m_on = grpo_loss(x["logps"], x["old"], ref, x["adv"], x["mask"], seq_mask, **kw)  # type: ignore[arg-type]
    # staleness 0: the proximal policy is the behaviour policy; even a differing prox tensor
    # (numerical noise) must not weight a fresh row
    off, m_off = offpolicy_grpo_loss(
        x["logps"], x["old"], x["old"] + 0.7, ref, x["adv"], x["mask"], seq_mask,
        torch.zeros(N, dtype=torch.long), max_staleness=0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    assert off.item() == on.item()
    assert torch.equal(grads(off, x["logps"]), grads(on, x["logps"]))
    assert m_off["ess"] == 1.0 and m_off["stale_sequences"] == 0.0
    assert {k: m_off[k] for k in m_on} == m_on


def test_truncation_caps_the_behaviour_weight() -> None:
    x = inputs(1)
    prox = x["old"]
    stale = torch.tensor([0, 2, 0, 0, 0, 0])
    only = torch.tensor([False, True, False, False, False, False])
    args = (x["adv"], x["mask"], only, stale)
    # π_prox/μ = e^3 ≈ 20 on row 1: capped at 2 → exactly 2x the on-policy loss of that row
    loss, m = offpolicy_grpo_loss(
        x["logps"], prox, prox - 3.0, None, *args, max_staleness=2, is_cap=2.0, loss_type="bnpo"
    )
    on, _ = grpo_loss(x["logps"], prox, None, x["adv"], x["mask"], only, loss_type="bnpo")
    assert loss.item() == pytest.approx(2.0 * on.item(), rel=1e-6)
    assert m["is_truncated"] == 1.0 and m["is_weight_mean"] == pytest.approx(2.0)
    # below the cap the weight is the ratio itself (e^-0.5), and nothing is truncated
    low, m2 = offpolicy_grpo_loss(
        x["logps"], prox, prox + 0.5, None, *args, max_staleness=2, is_cap=2.0, loss_type="bnpo"
    )
    assert low.item() == pytest.approx(math.exp(-0.5) * on.item(), rel=1e-6)
    assert m2["is_truncated"] == 0.0
    # no correction: the late row is used as if on-policy
    naive, _ = offpolicy_grpo_loss(
        x["logps"], prox, prox - 3.0, None, *args, max_staleness=2, correction="none",
        loss_type="bnpo",
    )  # fmt: skip
    assert naive.item() == pytest.approx(on.item(), rel=1e-6)


def test_ess_is_one_for_equal_weights_and_drops_when_they_spread() -> None:
    x = inputs(2)
    stale = torch.full((N,), 1)
    beh = x["old"].clone()
    _, even = offpolicy_grpo_loss(
        x["logps"], x["old"], beh - 0.2, None, x["adv"], x["mask"], None, stale, max_staleness=1
    )
    assert even["ess"] == pytest.approx(1.0)
    beh[0] -= 1.5  # one row far more likely under π_prox than under μ
    _, spread = offpolicy_grpo_loss(
        x["logps"], x["old"], beh, None, x["adv"], x["mask"], None, stale, max_staleness=1,
        is_cap=100.0,
    )  # fmt: skip
    assert 0.0 < spread["ess"] < 0.9


def test_too_stale_rows_and_masked_rows_behave_like_missing_rewards() -> None:
    x = inputs(3)
    stale = torch.tensor([0, 5, 1, 0, 3, 0])
    seq_mask = torch.tensor([True, True, True, False, True, True])
    loss, m = offpolicy_grpo_loss(
        x["logps"], x["old"], x["old"], None, x["adv"], x["mask"], seq_mask, stale,
        max_staleness=2,
    )  # fmt: skip
    kept = torch.tensor([True, False, True, False, False, True])  # 5 and 3 > 2; row 3 masked
    ref, _ = grpo_loss(x["logps"], x["old"], None, x["adv"], x["mask"], kept)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert m["too_stale_sequences"] == 2.0 and m["stale_sequences"] == 1.0
    g = grads(loss, x["logps"])
    assert torch.all(g[~kept] == 0)
    # garbage in a masked row's behaviour log-probs changes nothing
    wild = x["old"].clone()
    wild[3] = 1e6
    again, _ = offpolicy_grpo_loss(
        x["logps"], x["old"], wild, None, x["adv"], x["mask"], seq_mask, stale, max_staleness=2
    )
    assert again.item() == loss.item() and math.isfinite(again.item())


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="correction"):
        LateRewardConfig(correction="magic")
    with pytest.raises(ConfigError, match="is_cap"):
        LateRewardConfig(is_cap=0.0)
    with pytest.raises(ConfigError, match="max_staleness"):
        LateRewardConfig(max_staleness=-1)
    x = inputs()
    with pytest.raises(ConfigError, match="staleness has shape"):
        offpolicy_grpo_loss(
            x["logps"], x["old"], x["old"], None, x["adv"], x["mask"], None,
            torch.zeros(N + 1), max_staleness=1,
        )  # fmt: skip
