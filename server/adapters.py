"""LoRA adapters on the server policy (``server.lora``), from ``peft``.

With an adapter the GRPO update trains only the low-rank matrices peft adds to the chosen
linear layers; the base weights stay frozen. That is fewer trainable parameters (SmolLM2-135M
at rank 16 on every linear layer: 4.9M of 135M), a much smaller optimizer state and
checkpoint delta, and an update that cannot move the base model far — the usual remedy when
full fine-tuning wrecks what the model already knew (Biderman et al. 2024, *LoRA learns less
and forgets less*). LoRA wants a ~10x larger learning rate than full fine-tuning.

The adapted model is a ``peft.PeftModel``: rollout, the loss and evaluation call it as the
plain model. Checkpoints keep its whole state dict (base and adapter), so a resumed run is
exact; :func:`merged_copy` gives the plain model with the adapter folded in, which is what a
run saves as ``final_model`` (loadable without peft).
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass
from typing import Any

from fedgrpo.errors import ConfigError

ALL_LINEAR = "all-linear"  # peft: every linear layer but the output head


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA adapter: rank ``r``, scale ``alpha / r``, dropout, which modules."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    # module names (e.g. ("q_proj", "v_proj")), "all-linear", or None for peft's default
    target_modules: tuple[str, ...] | str | None = ALL_LINEAR

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"lora rank={self.rank}; give an integer >= 1")
        if self.alpha < 1:
            raise ConfigError(f"lora alpha={self.alpha}; give an integer >= 1 (scale = alpha / rank)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora dropout={self.dropout}; give a value in [0, 1)")


def init_seed(seed: int) -> int:
    """The torch seed of the adapter's initialisation, a pure function of the run's seed."""
    digest = hashlib.sha256(f"{seed}:lora-init".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def wrap_lora(model: Any, spec: LoraSpec, seed: int = 0) -> Any:
    """``model`` with a fresh LoRA adapter (peft); only the adapter's parameters train.

    peft initialises B = 0, so the adapted model starts equal to ``model``; A is drawn from
    torch's global generator, which is seeded here from ``seed`` (and restored afterwards), so
    a run's adapter, and with it every gradient, is the same each time."""
    try:
        import torch
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("LoRA adapters need peft: pip install 'fedgrpo[server]'") from exc
    targets = spec.target_modules
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")  # GPT-2
            torch.manual_seed(init_seed(seed))
            return get_peft_model(model, config)
    except ValueError as exc:  # peft: a target module the model does not have
        raise ConfigError(
            f"server.lora.target_modules={targets!r} do not fit this model ({exc}); use 'all-linear' "
            "or names of its linear layers"
        ) from None


def is_adapted(model: Any) -> bool:
    """True for a model :func:`wrap_lora` returned."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


def merged_copy(model: Any) -> Any:
    """A plain model with the adapter folded into the weights (``model`` is left as it is);
    a model without an adapter is returned unchanged."""
    if not is_adapted(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def trainable_parameters(model: Any) -> list[Any]:
    """The parameters an optimizer should update (all of them without an adapter)."""
    return [p for p in model.parameters() if p.requires_grad]
