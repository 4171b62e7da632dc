"""Supervised next-token training of a tiny causal LM on (prompt, completion) pairs.

Loss is taken on completion tokens only (the prompt is given), which is what the models are
later asked to do. Model and tokenizer are passed in; the data order comes from ``seed``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # LR at the end of the cosine schedule, as a fraction of ``lr`` (0.1 = the original
    # schedule; omitted from recipe digests at that default so cached models keep their keys).
    final_lr_fraction: float = 0.1


def build_sft_batch(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]]
) -> dict[str, torch.Tensor]:
    """Right-padded ids with labels = -100 on prompt and padding tokens."""
    import torch

    rows: list[list[int]] = []
    label_rows: list[list[int]] = []
    for prompt, completion in pairs:
        prompt_ids = tokenizer(prompt)["input_ids"]
        full_ids = tokenizer(prompt + completion)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(full_ids)
        label_rows.append([-100] * len(prompt_ids) + full_ids[len(prompt_ids) :])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in label_rows])
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[tuple[str, str]],
    config: TrainConfig,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train in place with AdamW + linear warmup + cosine decay; returns the loss per step."""
    import torch

    if not pairs:
        from fedgrpo.errors import ConfigError

        raise ConfigError("train_sft needs at least one (prompt, completion) pair")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        floor = config.final_lr_fraction
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    for step in range(config.steps):
        if len(order) < config.batch_size:
            fresh = list(range(len(pairs)))
            rng.shuffle(fresh)
            order.extend(fresh)
        batch_idx, order = order[: config.batch_size], order[config.batch_size :]
        batch = build_sft_batch(tokenizer, [pairs[i] for i in batch_idx])
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.item()))
        if on_step is not None:
            on_step(step, losses[-1])
    model.eval()
    return losses
