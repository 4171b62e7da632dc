"""Masked group-relative advantages, TRL-compatible when nothing is missing.

rewards [B, G] (B questions × G candidates), mask [B, G] (False = no reward):

* ``group``: A = (r − mean_g) / (std_g + eps) over the rewarded candidates of the group
* ``batch``: mean per group, std over all effective candidates of the batch
* ``none`` : A = r − mean_g

std is unbiased (``torch.std`` default, correction=1) and eps = 1e-4, as TRL.
"""

from __future__ import annotations

import numpy as np
import torch

from fedgrpo.errors import ConfigError

SCALES = ("group", "batch", "none")
MIN_REWARDED = 2


def _masked_std(
    x: torch.Tensor, m: torch.Tensor, mean: torch.Tensor, dim: int | None
) -> torch.Tensor:
    """Unbiased std of ``x`` where ``m``; 0 when fewer than 2 values."""
    sq = torch.where(m, (x - mean) ** 2, torch.zeros_like(x))
    if dim is None:
        n, s = m.sum(), sq.sum()
    else:
        n, s = m.sum(dim, keepdim=True), sq.sum(dim, keepdim=True)
    return torch.sqrt(s / (n - 1).clamp(min=1))


def group_advantages(
    rewards: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
    scale: str = "group",
    eps: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (advantages [B, G], effective mask [B, G]).

    ``mask`` defaults to ``~isnan(rewards)``. Missing rewards may hold anything (NaN too).
    Groups with < 2 rewarded candidates: advantages 0, effective mask all False.
    Zero-variance groups: advantages exactly 0, mask unchanged (they still carry the KL term).
    numpy inputs are accepted. Feed ``advantages.reshape(-1)`` and ``mask.reshape(-1)`` to
    :func:`server.grpo.loss.grpo_loss` as ``advantages`` and ``seq_mask``.
    """
    if scale not in SCALES:
        raise ConfigError(f"scale={scale!r} is unknown; allowed: {SCALES}")
    rewards = torch.as_tensor(rewards)
    if rewards.ndim != 2:
        raise ConfigError(
            f"rewards must be 2-D [questions, candidates]; got {tuple(rewards.shape)}"
        )
    r = rewards.detach().float() if not rewards.is_floating_point() else rewards.detach()
    m = ~torch.isnan(r)
    if mask is not None:
        given = torch.as_tensor(mask).to(torch.bool)
        if given.shape != r.shape:
            raise ConfigError(
                f"mask shape {tuple(given.shape)} differs from rewards {tuple(r.shape)}"
            )
        m = m & given
    r = torch.where(m, r, torch.zeros_like(r))
    n = m.sum(1, keepdim=True)
    eff = m & (n >= MIN_REWARDED)
    mean = r.sum(1, keepdim=True) / n.clamp(min=1)
    centred = torch.where(eff, r - mean, torch.zeros_like(r))
    big = torch.finfo(r.dtype).max
    hi = torch.where(m, r, torch.full_like(r, -big)).amax(1, keepdim=True)
    lo = torch.where(m, r, torch.full_like(r, big)).amin(1, keepdim=True)
    centred = torch.where(hi == lo, torch.zeros_like(r), centred)  # zero variance → exactly 0
    if scale == "none":
        return centred, eff
    if scale == "group":
        std = _masked_std(r, eff, mean, dim=1)
    else:
        # as TRL's rewards.std(): spread of all effective rewards around their batch mean;
        # the deviations above stay relative to each group's own mean.
        std = _masked_std(r, eff, (r * eff).sum() / eff.sum().clamp(min=1), dim=None)
    return centred / (std + eps), eff
