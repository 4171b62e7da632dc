"""Question embeddings from the frozen server model, for the confidence graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def embed_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    layer: int = -1,
    batch_size: int = 64,
) -> np.ndarray:
    """Mean-pooled hidden state of ``layer`` over real tokens, L2-normalised: [N, hidden].

    Call it on a frozen copy (the initial model): embeddings must not drift as the policy
    trains, or the auxiliary set would need re-embedding every round.
    """
    import torch

    from fedgrpo.server.generation import encode_prompts

    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = encode_prompts(tokenizer, texts[start : start + batch_size])
            batch = {k: v.to(model.device) for k, v in encoded.items()}
            mask = batch["attention_mask"]
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(**batch, position_ids=position_ids, output_hidden_states=True)
            hidden = out.hidden_states[layer]
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            chunks.append(pooled.float().cpu().numpy())
    emb = np.concatenate(chunks, axis=0)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
