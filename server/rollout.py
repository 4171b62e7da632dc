"""Rollout: G candidate policies per question, packed for the GRPO update.

Layout of a packed batch (one row per candidate)::

    [pad pad | prompt tokens | completion tokens | pad pad]
     <-- P (left-padded) -->  <-- C (right-padded) -->

so the last C positions are the completion for every row; ``per_token_logps(...,
completion_length=C)`` reads exactly them. Position ids are derived from the attention mask
because left padding must not shift positions (as HF ``generate`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from fedgrpo.server.generation import SamplingParams, generate

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

B = TypeVar("B")


@dataclass
class RolloutBatch:
    """B questions × G candidates, flattened question-major (row = b * G + g)."""

    questions: list[str]
    prompts: list[str]
    completions: list[str]  # decoded text, G per question
    input_ids: torch.Tensor  # [B*G, P+C]
    attention_mask: torch.Tensor  # [B*G, P+C]
    completion_mask: torch.Tensor  # [B*G, C] 1 on generated tokens (EOS included)
    old_logps: torch.Tensor  # [B*G, C] log-probs under the sampling policy
    group_size: int

    @property
    def num_questions(self) -> int:
        return len(self.questions)

    @property
    def completion_length(self) -> int:
        return int(self.completion_mask.shape[1])

    def candidates(self, b: int) -> list[str]:
        return self.completions[b * self.group_size : (b + 1) * self.group_size]


def pack(
    prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, completion_mask) in the layout described above."""
    import torch

    width_p = max(len(p) for p in prompt_ids)
    width_c = max(1, max(len(c) for c in completion_ids))
    ids, attn, cmask = [], [], []
    for p, c in zip(prompt_ids, completion_ids):
        left, right = width_p - len(p), width_c - len(c)
        ids.append([pad_id] * left + list(p) + list(c) + [pad_id] * right)
        attn.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
        cmask.append([1] * len(c) + [0] * right)
    return torch.tensor(ids), torch.tensor(attn), torch.tensor(cmask, dtype=torch.float32)


def completion_logps(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    temperature: float = 1.0,
    share_prompt: bool = False,
) -> torch.Tensor:
    """Per-token log-probs of the completion part, [N, C] (grad flows if enabled).

    ``share_prompt`` runs each distinct prompt once and only the completions per row
    (``server/prefix.py``): the same values up to float rounding, far fewer positions."""
    from fedgrpo.server.grpo import per_token_logps, target_logps
    from fedgrpo.server.prefix import position_ids, shared_prompt_logits

    if share_prompt:
        logits = shared_prompt_logits(model, input_ids, attention_mask, completion_length)
        return target_logps(logits, input_ids[:, -completion_length:], temperature)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids(attention_mask),
    ).logits
    return per_token_logps(
        logits, input_ids, completion_length=completion_length, temperature=temperature
    )


def rollout(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    prompts: Sequence[str],
    group_size: int,
    params: SamplingParams,
    generator: torch.Generator,
    share_prompt: bool = False,
) -> RolloutBatch:
    """Sample ``group_size`` completions per prompt and record their old log-probs
    (``share_prompt``: prefill and score each prompt once, see ``server/prefix.py``)."""
    import torch

    repeated = [p for p in prompts for _ in range(group_size)]
    texts, prompt_ids, completion_ids = generate(
        model, tokenizer, repeated, params, generator, share_prompt=share_prompt
    )
    packed = pack(prompt_ids, completion_ids, tokenizer.pad_token_id)
    input_ids, attention, cmask = (t.to(model.device) for t in packed)
    with torch.no_grad():
        old = completion_logps(
            model, input_ids, attention, cmask.shape[1],
            temperature=max(params.temperature, 1e-6), share_prompt=share_prompt,
        )  # fmt: skip
    return RolloutBatch(
        questions=list(questions),
        prompts=list(prompts),
        completions=texts,
        input_ids=input_ids,
        attention_mask=attention,
        completion_mask=cmask,
        old_logps=old,
        group_size=group_size,
    )


def take_groups(batch: B, groups: Sequence[int], group_size: int) -> B:
    """The same kind of batch holding only ``groups`` (question indices), rows kept in order.

    Works on any dataclass batch laid out question-major (row = b * G + g), a
    :class:`RolloutBatch` or a late-group ``MergedBatch``: tensors and lists with one entry
    per row are indexed by row, lists with one entry per question by question; the width
    (padding) is unchanged, so every row's values are as in the full batch."""
    import torch

    n_rows = None
    for f in fields(batch):  # type: ignore[arg-type]
        v = getattr(batch, f.name)
        if isinstance(v, torch.Tensor) and v.ndim >= 1:
            n_rows = int(v.shape[0])
            break
    assert n_rows is not None and n_rows % group_size == 0, "a batch of G rows per question"
    rows = [q * group_size + j for q in groups for j in range(group_size)]
    changes: dict[str, Any] = {}
    for f in fields(batch):  # type: ignore[arg-type]
        v = getattr(batch, f.name)
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == n_rows:
            changes[f.name] = v.index_select(0, torch.tensor(rows, device=v.device))
        elif isinstance(v, list) and len(v) == n_rows:
            changes[f.name] = [v[i] for i in rows]
        elif isinstance(v, list) and len(v) == n_rows // group_size:
            changes[f.name] = [v[q] for q in groups]
    return replace(batch, **changes)  # type: ignore[type-var]


def signal_only(batch: B, combined: np.ndarray) -> tuple[B, np.ndarray]:
    """(batch, rewards [B, G]) without the groups whose rewards do not vary (unchanged when
    all vary or none does): ``server.grpo.drop_zero_variance``."""
    from fedgrpo.server.grpo.rewards import signal_mask

    keep = signal_mask(combined)
    if keep.all() or not keep.any():
        return batch, combined
    return take_groups(batch, np.flatnonzero(keep).tolist(), combined.shape[1]), combined[keep]
