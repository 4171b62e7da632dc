"""Token-level GRPO loss: equality with TRL's _compute_loss, masking, clipping, KL, grads."""

from __future__ import annotations

import pytest
import torch

from fedgrpo.errors import ConfigError
from fedgrpo.server.grpo.loss import grpo_loss, k3_kl, per_token_logps

N, T = 6, 7


def trl_loss(
    logps: torch.Tensor,
    old: torch.Tensor,
    ref: torch.Tensor | None,
    adv: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float,
    eps_high: float,
    beta: float,
    loss_type: str,
    max_len: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Independent transcription of TRL GRPOTrainer._compute_loss (single process)."""
    coef_1 = torch.exp(logps - old)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv.unsqueeze(1), coef_2 * adv.unsqueeze(1))
    if beta != 0.0:
        assert ref is not None
        kl = torch.exp(ref - logps) - (ref - logps) - 1
        per_token_loss = per_token_loss + beta * kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dapo":  # num_items_in_batch / num_processes with one process
        loss = (per_token_loss * mask).sum() / mask.sum()
    else:
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_len)
    low = (coef_1 < 1 - eps_low) & (adv.unsqueeze(1) < 0)
    high = (coef_1 > 1 + eps_high) & (adv.unsqueeze(1) > 0)
    metrics = {
        "clip_low": float((low * mask).sum() / mask.sum()),
        "clip_high": float((high * mask).sum() / mask.sum()),
        "clip_region": float(((low | high) * mask).sum() / mask.sum()),
    }
    return loss, metrics


def random_inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(N, T, generator=gen) * 3
    logps = old + torch.randn(N, T, generator=gen) * 0.3  # ratios spread across the band
    ref = old + torch.randn(N, T, generator=gen) * 0.2
    adv = torch.randn(N, generator=gen)
    lengths = torch.randint(1, T + 1, (N,), generator=gen)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return {"logps": logps, "old": old, "ref": ref, "adv": adv, "mask": mask}


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_trl(loss_type: str, beta: float, seed: int) -> None:
    x = random_inputs(seed)
    mine_lp = x["logps"].clone().requires_grad_(True)
    trl_lp = x["logps"].clone().requires_grad_(True)
    loss, metrics = grpo_loss(
        mine_lp,
        x["old"],
        x["ref"],
        x["adv"],
        x["mask"],
        eps_low=0.2,
        eps_high=0.3,
        beta=beta,
        loss_type=loss_type,
        max_completion_length=T + 3,
    )
    ref_loss, ref_metrics = trl_loss(
        trl_lp, x["old"], x["ref"], x["adv"], x["mask"], 0.2, 0.3, beta, loss_type, T + 3
    )
    torch.testing.assert_close(loss, ref_loss)
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(mine_lp.grad, trl_lp.grad)
    for key, value in ref_metrics.items():
        assert metrics[key] == pytest.approx(value)
    assert metrics["clip_region"] > 0  # the inputs do exercise clipping


def test_masked_sequences_leave_loss_and_denominators() -> None:
    x = random_inputs(5)
    keep = torch.tensor([True, False, True, True, False, True])
    garbage_lp = x["logps"].clone()
    garbage_lp[~keep] = -1e9  # whatever the masked candidates hold
    for loss_type in ("grpo", "bnpo", "dapo", "dr_grpo"):
        loss, _ = grpo_loss(
            garbage_lp,
            x["old"],
            x["ref"],
            x["adv"],
            x["mask"],
            keep,
            beta=0.1,
            loss_type=loss_type,
            max_completion_length=T,
        )
        sub, _ = grpo_loss(
            x["logps"][keep],
            x["old"][keep],
            x["ref"][keep],
            x["adv"][keep],
            x["mask"][keep],
            beta=0.1,
            loss_type=loss_type,
            max_completion_length=T,
        )
        torch.testing.assert_close(loss, sub)


def test_nothing_effective_gives_zero_loss_with_graph() -> None:
    x = random_inputs(2)
    lp = x["logps"].clone().requires_grad_(True)
    loss, m = grpo_loss(lp, x["old"], None, x["adv"], x["mask"], torch.zeros(N, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and lp.grad is not None and lp.grad.abs().sum() == 0
    assert m["active_tokens"] == 0.0


def _token_grad(ratio: float, adv: float, eps: float = 0.2) -> float:
    lp = torch.tensor([[torch.log(torch.tensor(ratio)).item()]], requires_grad=True)
    loss, _ = grpo_loss(
        lp,
        torch.zeros(1, 1),
        None,
        torch.tensor([adv]),
        torch.ones(1, 1),
        eps_low=eps,
        eps_high=eps,
    )
    loss.backward()
    assert lp.grad is not None
    return float(lp.grad.item())


def test_clipping_kills_gradient_only_when_advantage_says_so() -> None:
    assert _token_grad(1.5, +1.0) == 0.0  # too likely already, positive A: clipped
    assert _token_grad(0.5, -1.0) == 0.0  # too unlikely already, negative A: clipped
    assert _token_grad(1.5, -1.0) == pytest.approx(1.5)  # pessimistic branch keeps gradient
    assert _token_grad(0.5, +1.0) == pytest.approx(-0.5)
    assert _token_grad(1.1, +1.0) == pytest.approx(-1.1)  # inside the band


def test_k3_nonnegative_and_zero_at_ref() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, generator=gen) * 5, torch.randn(100, generator=gen) * 5
    assert (k3_kl(a, b) >= 0).all()
    assert k3_kl(a, a).abs().max().item() == 0.0
    x = random_inputs(0)
    _, m = grpo_loss(x["logps"], x["old"], x["logps"], x["adv"], x["mask"], beta=0.1)
    assert m["kl"] == 0.0


def test_gradient_flows_through_logps_only() -> None:
    x = random_inputs(1)
    lp, old, ref, adv = (
        t.clone().requires_grad_(True) for t in (x["logps"], x["old"], x["ref"], x["adv"])
    )
    loss, _ = grpo_loss(lp, old, ref, adv, x["mask"], beta=0.1)
    loss.backward()
    assert lp.grad is not None and lp.grad.abs().sum() > 0
    assert old.grad is None and ref.grad is None and adv.grad is None


def test_on_policy_ratio_is_one() -> None:
    x = random_inputs(3)
    loss, m = grpo_loss(x["logps"], None, None, x["adv"], x["mask"])
    assert m["ratio"] == pytest.approx(1.0) and m["clip_region"] == 0.0
    expected = -((x["adv"][:, None] * x["mask"]).sum(1) / x["mask"].sum(1)).mean()
    torch.testing.assert_close(loss, expected)


def test_extreme_inputs_nan_free() -> None:
    lp = torch.tensor([[-1e4, 0.0, -float("inf")], [50.0, -50.0, 0.0]], requires_grad=True)
    old = torch.tensor([[0.0, -1e4, -float("inf")], [-50.0, 50.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1e6, -1e6])
    for loss_type in ("grpo", "bnpo", "dapo", "dr_grpo"):
        loss, m = grpo_loss(
            lp, old, old, adv, mask, beta=0.5, loss_type=loss_type, max_completion_length=3
        )
        loss.backward()
        assert torch.isfinite(loss) and lp.grad is not None and torch.isfinite(lp.grad).all()
        assert all(v == v for v in m.values())
        lp.grad = None


def test_dapo_global_normalizer_and_config_errors() -> None:
    x = random_inputs(4)
    a, _ = grpo_loss(x["logps"], x["old"], None, x["adv"], x["mask"], loss_type="dapo")
    b, _ = grpo_loss(
        x["logps"],
        x["old"],
        None,
        x["adv"],
        x["mask"],
        loss_type="dapo",
        token_normalizer=float(x["mask"].sum() * 2),
    )
    torch.testing.assert_close(b, a / 2)
    with pytest.raises(ConfigError, match="ref_logps"):
        grpo_loss(x["logps"], x["old"], None, x["adv"], x["mask"], beta=0.1)
    with pytest.raises(ConfigError, match="allowed"):
        grpo_loss(x["logps"], x["old"], None, x["adv"], x["mask"], loss_type="ppo")
    with pytest.raises(ConfigError, match="max_completion_length"):
        grpo_loss(x["logps"], x["old"], None, x["adv"], x["mask"], loss_type="dr_grpo")


def test_per_token_logps_shift() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen)
    ids = torch.randint(0, 11, (2, 5), generator=gen)
    lp = per_token_logps(logits, ids)
    assert lp.shape == (2, 4)
    manual = torch.log_softmax(logits[1, 2], -1)[ids[1, 3]]
    torch.testing.assert_close(lp[1, 2], manual)
    torch.testing.assert_close(per_token_logps(logits, ids, completion_length=2), lp[:, -2:])
    hot = per_token_logps(logits, ids, temperature=0.5)
    torch.testing.assert_close(hot[0, 0], torch.log_softmax(logits[0, 0] / 0.5, -1)[ids[0, 1]])
    half = per_token_logps(logits.bfloat16(), ids)
    assert half.dtype == torch.float32
