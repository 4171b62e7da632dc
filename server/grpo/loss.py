"""Token-level clipped GRPO loss with the k3 KL estimator; aggregations as TRL's loss_type.

Shapes: N sequences (questions × candidates, flattened), T completion tokens.
``logps``/``old_logps``/``ref_logps`` [N, T] are log-probabilities of the sampled tokens,
``advantages`` [N], ``completion_mask`` [N, T] (1 = real token), ``seq_mask`` [N] (the
effective mask from :func:`server.grpo.advantages.group_advantages`, flattened).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedgrpo.errors import ConfigError

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo")
MAX_LOG_RATIO = 20.0


def per_token_logps(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    completion_length: int | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log p(input_ids[:, t] | <t) for t = 1..S-1 from causal-LM logits [N, S, V] → [N, S-1].

    With ``completion_length`` C only the last C positions are returned ([N, C]).
    Half-precision logits are upcast to float32 first.
    """
    logits, targets = logits[:, :-1], input_ids[:, 1:]
    if completion_length is not None:
        if not 0 < completion_length <= targets.shape[1]:
            raise ConfigError(
                f"completion_length={completion_length}; allowed 1..{targets.shape[1]}"
            )
        logits, targets = logits[:, -completion_length:], targets[:, -completion_length:]
    return target_logps(logits, targets, temperature)


def target_logps(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log p(targets[:, t]) from the logits that predict them, [N, T, V] → [N, T].

    Half-precision logits are upcast to float32 first."""
    if temperature <= 0:
        raise ConfigError(f"temperature={temperature} must be > 0")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logp = F.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π ‖ π_ref): exp(d) − d − 1 with d = ref − logp; ≥ 0."""
    return _k3(ref_logps - logps)


def _k3(d: torch.Tensor) -> torch.Tensor:
    d = d.clamp(max=MAX_LOG_RATIO)
    return torch.exp(d) - d - 1


def _aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    seq_mask: torch.Tensor,
    loss_type: str,
    max_completion_length: int | None,
    token_normalizer: float | None,
) -> torch.Tensor:
    total = (per_token * mask).sum()
    n_seq = seq_mask.sum().clamp(min=1)
    if loss_type == "grpo":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return (per_seq * seq_mask).sum() / n_seq
    if loss_type == "bnpo" or (loss_type == "dapo" and token_normalizer is None):
        return total / mask.sum().clamp(min=1.0)
    if loss_type == "dapo":
        assert token_normalizer is not None
        return total / max(token_normalizer, 1.0)
    assert max_completion_length is not None
    return total / (n_seq * max_completion_length)


def _check(
    loss_type: str, beta: float, ref: bool, max_len: int | None, eps: tuple[float, float]
) -> None:
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"loss_type={loss_type!r} is unknown; allowed: {LOSS_TYPES}")
    if beta < 0:
        raise ConfigError(f"beta={beta} must be >= 0")
    if beta != 0 and not ref:
        raise ConfigError(f"beta={beta} needs ref_logps; pass them or set beta=0.0")
    if loss_type == "dr_grpo" and (max_len is None or max_len <= 0):
        raise ConfigError(f"loss_type='dr_grpo' needs max_completion_length > 0; got {max_len}")
    if not (0 <= eps[0] < 1 and eps[1] >= 0):
        raise ConfigError(f"eps_low={eps[0]}, eps_high={eps[1]}; allowed 0<=eps_low<1, eps_high>=0")


def _check_shapes(
    logps: torch.Tensor, completion_mask: torch.Tensor, advantages: torch.Tensor
) -> None:
    if (
        logps.ndim != 2
        or completion_mask.shape != logps.shape
        or advantages.shape != logps.shape[:1]
    ):
        raise ConfigError(
            f"shapes: logps {tuple(logps.shape)}, completion_mask {tuple(completion_mask.shape)}, "
            f"advantages {tuple(advantages.shape)}; need [N, T], [N, T], [N]"
        )


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    seq_mask: torch.Tensor | None = None,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    token_normalizer: float | None = None,
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped GRPO loss and metrics; gradient flows through ``logps`` only.

    per-token loss = −min(ρA, clip(ρ, 1−eps_low, 1+eps_high)·A) + beta·k3, ρ = exp(logp − old).
    ``old_logps=None`` means on-policy (old = logps.detach(), as TRL with num_iterations=1).
    Sequences with ``seq_mask`` False get zero weight and leave every denominator.
    Aggregation (TRL): grpo = mean over sequences of the per-sequence token mean;
    bnpo = token sum / active tokens; dapo = bnpo, or token sum / ``token_normalizer``
    (global active-token count) when given; dr_grpo = token sum / (sequences · max length).
    Metrics (over active tokens): clip_low/clip_high/clip_region fractions, kl, ratio.
    ``token_weights`` [N, T] (detached) multiply the clipped policy term, not the KL term
    (the importance weights of :mod:`server.grpo.offpolicy`; None = 1).
    """
    _check(loss_type, beta, ref_logps is not None, max_completion_length, (eps_low, eps_high))
    _check_shapes(logps, completion_mask, advantages)
    sm = torch.ones_like(advantages, dtype=torch.bool) if seq_mask is None else seq_mask.bool()
    active = completion_mask.bool() & sm[:, None]
    mask = active.to(logps.dtype)
    zero = torch.zeros_like(logps)
    old = logps.detach() if old_logps is None else old_logps.detach()
    log_ratio = torch.where(active, logps - old, zero).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    adv = torch.where(sm, advantages.detach().to(logps.dtype), 0.0)[:, None]
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if token_weights is not None:
        per_token = per_token * token_weights.detach().to(logps.dtype)
    kl = None
    if ref_logps is not None:
        kl = _k3(torch.where(active, ref_logps.detach().to(logps.dtype) - logps, zero))
        if beta != 0:
            per_token = per_token + beta * kl
    loss = _aggregate(
        per_token, mask, sm.to(logps.dtype), loss_type, max_completion_length, token_normalizer
    )
    return loss, _metrics(ratio.detach(), adv, mask, kl, eps_low, eps_high)


def _metrics(
    ratio: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    kl: torch.Tensor | None,
    eps_low: float,
    eps_high: float,
) -> dict[str, float]:
    n = mask.sum().clamp(min=1.0)
    low = (ratio < 1 - eps_low) & (adv < 0)
    high = (ratio > 1 + eps_high) & (adv > 0)

    def frac(x: torch.Tensor) -> float:
        return float((x.to(mask.dtype) * mask).sum() / n)

    return {
        "clip_low": frac(low),
        "clip_high": frac(high),
        "clip_region": frac(low | high),
        "kl": frac(kl.detach()) if kl is not None else 0.0,
        "ratio": frac(ratio),
        "active_tokens": float(mask.sum()),
    }
