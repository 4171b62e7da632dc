"""FedPETuning-style model-level baseline: clients fine-tune LoRA adapters, the server averages.

What FedGRPO is compared against in the paper's table: every round each participating client
downloads the global LoRA adapter of the server model, trains it with supervised next-token
loss on its private (prompt, completion) pairs for ``local_steps`` steps, and uploads it; the
server takes the data-size-weighted mean (FedAvg) of the adapters. Clients therefore hold a
copy of the server model and send parameters, where FedGRPO clients send only scalars.

LoRA comes from ``peft``. Model and tokenizer are passed in; every random draw (which
clients, which batches) derives from ``(seed, round, client)``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedgrpo.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Pairs = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class FedPETuningConfig:
    rounds: int = 60
    clients_per_round: int | None = None  # None: every client every round
    local_steps: int = 4
    batch_size: int = 32
    lr: float = 2e-3
    rank: int = 8
    alpha: int = 16
    # peft's default for GPT-2 is c_attn only; None keeps peft's default for the model type
    target_modules: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.local_steps < 1 or self.batch_size < 1 or self.rank < 1:
            raise ConfigError(
                "FedPETuning rounds, local_steps, batch_size and rank must be >= 1; got "
                f"{self.rounds}, {self.local_steps}, {self.batch_size}, {self.rank}"
            )


@dataclass
class FedPETuningResult:
    model: Any  # the peft model, adapter = the final global adapter
    adapter_bytes: int  # one adapter's size (float32 parameters)
    bytes_total: int  # every download and upload of every round
    records: list[dict[str, Any]] = field(default_factory=list)


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    return int(sum(t.numel() * t.element_size() for t in state.values()))


def fedavg(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, Any]:
    """Weighted mean of adapter state dicts (same keys); weights need not sum to 1."""
    if not states or len(states) != len(weights):
        raise ConfigError(f"fedavg needs one weight per state; got {len(states)} and {len(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise ConfigError(f"fedavg weights must sum to > 0; got {list(weights)}")
    return {
        key: sum(w / total * s[key] for s, w in zip(states, weights))  # type: ignore[misc]
        for key in states[0]
    }


def _local_train(
    model: Any, tokenizer: Any, pairs: Pairs, cfg: FedPETuningConfig, rng: random.Random
) -> float:
    import torch

    from fedgrpo.server.adapters import trainable_parameters
    from fedgrpo.server.zoo.train import build_sft_batch

    params = trainable_parameters(model)  # the adapter's
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(cfg.local_steps):
        batch = build_sft_batch(tokenizer, [pairs[rng.randrange(len(pairs))] for _ in range(cfg.batch_size)])
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.item()))
    model.eval()
    return sum(losses) / len(losses)


def wrap_lora(model: PreTrainedModel, cfg: FedPETuningConfig) -> Any:
    """``model`` with a fresh adapter of the baseline's rank/alpha (one adapter code path:
    :func:`fedgrpo.server.adapters.wrap_lora`)."""
    from fedgrpo.server.adapters import LoraSpec
    from fedgrpo.server.adapters import wrap_lora as wrap

    return wrap(model, LoraSpec(cfg.rank, cfg.alpha, 0.0, cfg.target_modules), seed=cfg.seed)


def run_fedpetuning(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    client_pairs: Sequence[Pairs],
    cfg: FedPETuningConfig,
    on_round: Callable[[dict[str, Any], Any], None] | None = None,
) -> FedPETuningResult:
    """Run ``cfg.rounds`` FedAvg rounds of LoRA fine-tuning; returns the adapted model.

    ``on_round(record, peft_model)`` is called after each round's averaging (to evaluate)."""
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if not client_pairs or any(not p for p in client_pairs):
        raise ConfigError("every FedPETuning client needs at least one (prompt, completion) pair")
    torch.manual_seed(cfg.seed)
    peft_model = wrap_lora(model, cfg)
    global_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(peft_model).items()}
    size = state_bytes(global_state)
    k_all = len(client_pairs)
    per_round = k_all if cfg.clients_per_round is None else min(cfg.clients_per_round, k_all)
    result = FedPETuningResult(peft_model, size, 0)
    for r in range(cfg.rounds):
        chosen = sorted(random.Random(f"{cfg.seed}:{r}:clients").sample(range(k_all), per_round))
        states, weights, losses = [], [], []
        for k in chosen:
            set_peft_model_state_dict(peft_model, global_state)
            rng = random.Random(f"{cfg.seed}:{r}:{k}:batches")
            losses.append(_local_train(peft_model, tokenizer, client_pairs[k], cfg, rng))
            states.append(
                {n: v.detach().clone() for n, v in get_peft_model_state_dict(peft_model).items()}
            )
            weights.append(float(len(client_pairs[k])))
        global_state = fedavg(states, weights)
        set_peft_model_state_dict(peft_model, global_state)
        moved = 2 * size * len(chosen)  # each client downloads and uploads one adapter
        result.bytes_total += moved
        record = {"round": r + 1, "clients": chosen, "loss": sum(losses) / len(losses), "bytes": moved}
        result.records.append(record)
        if on_round is not None:
            on_round(record, peft_model)
    return result
