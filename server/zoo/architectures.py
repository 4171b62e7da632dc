"""Tiny transformer configs built with ``from_config`` (no weights downloaded, ever)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from fedgrpo.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class TinyArch:
    """Size of a tiny causal LM. ``family`` selects a GPT-2 or a Llama config."""

    family: Literal["gpt2", "llama"] = "gpt2"
    layers: int = 2
    hidden: int = 128
    heads: int = 4
    max_positions: int = 96

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def build_tiny_model(
    arch: TinyArch, tokenizer: PreTrainedTokenizerBase, seed: int
) -> PreTrainedModel:
    """A randomly initialised causal LM for ``tokenizer`` (deterministic for a given seed)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    if arch.hidden % arch.heads:
        raise ConfigError(f"hidden={arch.hidden} must be divisible by heads={arch.heads}")
    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config: GPT2Config | LlamaConfig
    if arch.family == "gpt2":
        config = GPT2Config(
            n_layer=arch.layers,
            n_embd=arch.hidden,
            n_head=arch.heads,
            n_positions=arch.max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    elif arch.family == "llama":
        config = LlamaConfig(
            num_hidden_layers=arch.layers,
            hidden_size=arch.hidden,
            intermediate_size=arch.hidden * 4,
            num_attention_heads=arch.heads,
            num_key_value_heads=arch.heads,
            max_position_embeddings=arch.max_positions,
            tie_word_embeddings=True,
            **common,
        )
    else:
        raise ConfigError(f"unknown model family {arch.family!r}; use 'gpt2' or 'llama'")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
