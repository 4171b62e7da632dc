"""Batched generation with left padding, for evaluation (greedy) and rollouts (sampling).

The model and tokenizer are passed in, so this runs on CPU with the zoo's tiny models.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingParams:
    """How completions are drawn. ``temperature == 0`` means greedy."""

    max_new_tokens: int = 40
    temperature: float = 1.0
    top_p: float = 1.0


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Left-padded batch (decoder-only models continue from the right edge)."""
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return dict(tokenizer(list(prompts), return_tensors="pt", padding=True))
    finally:
        tokenizer.padding_side = previous


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: SamplingParams,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    share_prompt: bool = False,
) -> tuple[list[str], list[list[int]], list[list[int]]]:
    """Generate one completion per prompt.

    Returns (completion texts, prompt token ids without padding, completion token ids up to and
    including EOS). Sampling draws from ``generator`` if given (seeded by the caller) by
    temporarily installing it as torch's default RNG state: HF ``generate`` has no generator
    argument, so we fork the global RNG, seed it from ``generator`` and restore it afterwards.
    ``share_prompt`` prefills each distinct prompt of a chunk once (``server/prefix.py``).
    """
    import torch

    texts: list[str] = []
    prompt_ids: list[list[int]] = []
    completion_ids: list[list[int]] = []
    greedy = params.temperature <= 0.0
    model_was_training = model.training
    model.eval()
    stops = stop_token_ids(model, tokenizer)
    kwargs = _generate_kwargs(tokenizer, params, stops)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        batch = {k: v.to(model.device) for k, v in encode_prompts(tokenizer, chunk).items()}
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            if generator is not None and not greedy:
                seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
                torch.manual_seed(seed)
            extra = _prefill(model, batch) if share_prompt else {}
            out = model.generate(**batch, **kwargs, **extra)  # type: ignore[operator]
        for prompt, generated in _split_rows(tokenizer, out.cpu(), batch, stops):
            prompt_ids.append(prompt)
            completion_ids.append(generated)
            texts.append(tokenizer.decode(generated, skip_special_tokens=True))
    if model_was_training:
        model.train()
    return texts, prompt_ids, completion_ids


def _prefill(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> dict[str, object]:
    """``generate``'s extra arguments for a shared-prompt prefill (none for 1-token prompts)."""
    from fedgrpo.server.prefix import prefill_cache

    if batch["input_ids"].shape[1] < 2:
        return {}
    return {"past_key_values": prefill_cache(model, batch["input_ids"], batch["attention_mask"])}


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Tokens that end a completion: the tokenizer's EOS and the model's generation-config EOS.

    They differ for chat models: SmolLM2's GGUF tokenizer names ``<|im_start|>`` its EOS,
    while a chat turn ends with ``<|im_end|>`` (its generation config's EOS). Without the
    latter a completion would run on into a new turn."""
    ids: list[int] = []
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, config_eos):
        for token in value if isinstance(value, list) else [value]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    return ids


def _generate_kwargs(
    tokenizer: PreTrainedTokenizerBase, params: SamplingParams, stops: list[int]
) -> dict[str, object]:
    """HF ``generate`` arguments for ``params`` (greedy at temperature 0, else pure top-p).

    Every row of a batch decodes together with a KV cache (``use_cache``): one forward pass
    over the new token per step, not over the whole sequence."""
    greedy = params.temperature <= 0.0
    kwargs: dict[str, object] = {
        "max_new_tokens": params.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": stops,
        "do_sample": not greedy,
        "use_cache": True,
    }
    if not greedy:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
    return kwargs


def _split_rows(
    tokenizer: PreTrainedTokenizerBase,
    out: torch.Tensor,
    batch: dict[str, torch.Tensor],
    stops: list[int],
) -> Iterator[tuple[list[int], list[int]]]:
    """Per generated row: the prompt's token ids without padding, and the completion's up to
    and including the first stop token (or without padding when it never ended)."""
    width = batch["input_ids"].shape[1]
    for row, mask in zip(out, batch["attention_mask"].cpu()):
        prompt = row[:width][mask.bool()].tolist()
        generated = row[width:].tolist()
        ends = [k for k, t in enumerate(generated) if t in stops]
        if ends:
            generated = generated[: ends[0] + 1]
        else:
            generated = [t for t in generated if t != tokenizer.pad_token_id]
        yield prompt, generated
