"""The trainer's per-round schedule and pure helpers: the round's random generators, the
learning-rate multiplier, the optimizer, and the ground-truth accuracy of the samples."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedgrpo.server.grpo.config import GRPOConfig
from fedgrpo.server.tasks import TaskItem

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

__all__ = ["lr_factor", "make_optimizer", "round_rngs", "sample_accuracy"]


def round_rngs(
    seed: int, round_index: int
) -> tuple[random.Random, np.random.Generator, torch.Generator]:
    """Independent generators for one round, a pure function of (seed, round)."""
    import torch

    py = random.Random(f"{seed}:{round_index}:questions")
    npg = np.random.default_rng([seed, round_index, 1])
    tg = torch.Generator().manual_seed(
        int(np.random.default_rng([seed, round_index, 2]).integers(2**62))
    )
    return py, npg, tg


def sample_accuracy(
    completions: Sequence[str],
    items: Sequence[TaskItem],
    group_size: int,
    is_correct: Callable[[str, str], bool] | None = None,
) -> float:
    """Fraction of the round's sampled completions that are right (completion k answers
    question ``k // group_size``): the ground truth the server never sees while training.
    ``is_correct`` is the task's checker (default: the shared answer format's)."""
    from fedgrpo.edge.answer_format import is_correct as shared_checker

    check = shared_checker if is_correct is None else is_correct
    return float(
        np.mean([check(t, items[k // group_size].answer) for k, t in enumerate(completions)])
    )


def lr_factor(cfg: GRPOConfig, round_index: int) -> float:
    """Learning-rate multiplier at ``round_index``: linear warmup, then optional cosine decay."""
    factor = 1.0
    if cfg.warmup_rounds > 0:
        factor = min(1.0, (round_index + 1) / cfg.warmup_rounds)
    if cfg.lr_decay_rounds > 0:
        progress = min(1.0, round_index / cfg.lr_decay_rounds)
        floor = cfg.lr_final_fraction
        factor *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def make_optimizer(model: PreTrainedModel, config: GRPOConfig) -> torch.optim.Optimizer:
    """AdamW (weight decay 0) or SGD, as ``config.optimizer`` says."""
    import torch

    from fedgrpo.server.adapters import trainable_parameters

    params = trainable_parameters(model)  # all of them, or a LoRA adapter's (server.lora)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.sgd_momentum)
    return torch.optim.AdamW(
        params,
        lr=config.lr,
        weight_decay=0.0,
        betas=(config.adam_beta1, config.adam_beta2),
    )
