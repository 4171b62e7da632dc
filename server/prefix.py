"""Shared-prompt forward passes: a group's G candidates share one prompt, so run it once.

A rollout batch holds G candidates per question, every one of them the same (left-padded)
prompt followed by its own completion (layout in ``server/rollout.py``). The plain forward
runs the model over all ``G × (P + C)`` positions; with a few-shot chat prompt (P ≈ 160
tokens, C ≈ 20) almost all of that is the same prompt G times. Here the prompt runs once per
*distinct* prompt row, its key/value cache is indexed out to the G rows (``index_select`` is
differentiable, so gradients still reach every prompt position), and only the completions
run per row: ``B × P + G·B × C`` positions instead of ``G·B × (P + C)``, and the vocabulary
projection only where a completion token is predicted.

The log-probs equal the plain forward's up to float rounding (different matmul shapes), so a
run with ``server.grpo.share_prompt: true`` differs from one without in the last bits — which
is why it is an option (off by default: the zoo's pinned results stay bit-identical) and not
silently on. ``tests/test_prefix.py`` checks values and gradients against the plain forward.

Generation uses the same idea (:func:`prefill_cache`): the distinct prompts are prefilled once
and ``generate`` continues from the expanded cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


def distinct_rows(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of one representative row per distinct (ids, mask) row, inverse map row → group).

    Rows are compared on the masked ids, so padding values never split a group."""
    import torch

    key = torch.cat([input_ids * attention_mask, attention_mask], dim=1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), key.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(key.shape[0]), reduce="amin")
    return first.to(input_ids.device), inverse.to(input_ids.device)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions from the mask, so left padding does not shift them (as HF ``generate``)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def shared_prompt_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
) -> torch.Tensor:
    """Logits predicting each of the last ``completion_length`` tokens, [N, C, V].

    Row n's logits at c predict ``input_ids[n, P + c]`` (P = width − C), as
    ``model(...).logits[:, P - 1 : -1]`` would."""
    import torch

    width_p = input_ids.shape[1] - completion_length
    last, cache = _run_once(model, input_ids[:, :width_p], attention_mask[:, :width_p])
    if completion_length == 1:
        return last
    rest = model(  # completion tokens but the last: they predict tokens 2..C
        input_ids=input_ids[:, width_p:-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=position_ids(attention_mask)[:, width_p:-1],
        past_key_values=cache,
        use_cache=True,
    ).logits
    return torch.cat([last, rest], dim=1)


def prefill_cache(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> Any:
    """A key/value cache over all but the last prompt position of every row, computed once
    per distinct row; ``generate`` given it runs only the last prompt token per row."""
    return _run_once(model, input_ids[:, :-1], attention_mask[:, :-1])[1]


def _run_once(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> tuple[Any, Any]:
    """The model over each distinct row once; (last-position logits [N, 1, V], cache), both
    indexed back out to every row (differentiably)."""
    first, inverse = distinct_rows(ids, mask)
    out = model(
        input_ids=ids[first],
        attention_mask=mask[first],
        position_ids=position_ids(mask[first]),
        use_cache=True,
        logits_to_keep=1,
    )
    cache: Any = out.past_key_values
    cache.batch_select_indices(inverse)
    return out.logits[inverse], cache
