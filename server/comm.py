"""Communication accounting: analytic LoRA baseline bytes and a ledger of measured bytes.

FedPETuning-style baseline: every round each participating client downloads the LoRA A and
B matrices of the targeted linear layers and uploads them back. A LoRA adapter on a linear
layer in→out with rank r has r·(in + out) parameters.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedgrpo.errors import ConfigError

GPT2_DEFAULT_TARGETS: tuple[str, ...] = ("c_attn",)  # PEFT's default for gpt2
LLAMA_DEFAULT_TARGETS: tuple[str, ...] = (
    "q_proj",
    "v_proj",
)  # PEFT's default for llama / qwen2 / mistral
_GPT2_ALIASES = {"qkv": "c_attn", "o": "attn.c_proj"}
_LLAMA_ALIASES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise ConfigError(f"model config of type {type(config).__name__}; pass a dict or HF config")


def _gpt2_shapes(cfg: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
    d = int(cfg["n_embd"])
    inner = int(cfg.get("n_inner") or 4 * d)
    shapes = {
        "c_attn": [(d, 3 * d)],
        "attn.c_proj": [(d, d)],
        "c_fc": [(d, inner)],
        "mlp.c_proj": [(inner, d)],
    }
    shapes["c_proj"] = shapes["attn.c_proj"] + shapes["mlp.c_proj"]  # PEFT suffix match
    return shapes


def _llama_shapes(cfg: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
    h = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv = int(cfg.get("num_key_value_heads") or heads)
    hd = int(cfg.get("head_dim") or h // heads)
    inter = int(cfg["intermediate_size"])
    return {
        "q_proj": [(h, heads * hd)],
        "k_proj": [(h, kv * hd)],
        "v_proj": [(h, kv * hd)],
        "o_proj": [(heads * hd, h)],
        "gate_proj": [(h, inter)],
        "up_proj": [(h, inter)],
        "down_proj": [(inter, h)],
    }


def lora_target_shapes(
    model_config: Any, target_modules: Sequence[str] | None = None
) -> list[tuple[int, int]]:
    """(in, out) of every targeted linear layer of the model (all layers)."""
    cfg = _as_dict(model_config)
    if "n_embd" in cfg:
        per_layer, aliases, default = _gpt2_shapes(cfg), _GPT2_ALIASES, GPT2_DEFAULT_TARGETS
        layers = int(cfg["n_layer"])
    elif "hidden_size" in cfg and "num_hidden_layers" in cfg:
        per_layer, aliases, default = _llama_shapes(cfg), _LLAMA_ALIASES, LLAMA_DEFAULT_TARGETS
        layers = int(cfg["num_hidden_layers"])
    else:
        raise ConfigError(
            "model config needs GPT-2 keys (n_embd, n_layer) or Llama keys "
            f"(hidden_size, num_hidden_layers, ...); got keys {sorted(cfg)[:12]}"
        )
    shapes: list[tuple[int, int]] = []
    for name in target_modules or default:
        key = aliases.get(name, name)
        if key not in per_layer:
            allowed = sorted(set(per_layer) | set(aliases))
            raise ConfigError(f"target module {name!r} is unknown here; allowed: {allowed}")
        shapes += per_layer[key] * layers
    return shapes


def lora_params(shapes: Sequence[tuple[int, int]], rank: int = 8) -> int:
    """Parameters of LoRA A (r×in) and B (out×r) over the given layers."""
    if rank <= 0:
        raise ConfigError(f"rank={rank}; allowed rank >= 1")
    return sum(rank * (i + o) for i, o in shapes)


def lora_bytes_per_round(
    model: Any,
    rank: int = 8,
    bytes_per_param: int = 4,
    clients_per_round: int = 1,
    target_modules: Sequence[str] | None = None,
) -> int:
    """Bytes a FedPETuning-style LoRA baseline moves per round: download + upload per client.

    ``model`` is a config (dict / HF config, GPT-2 or Llama-like) or the list of (in, out)
    shapes of every targeted linear layer.
    """
    if bytes_per_param <= 0 or clients_per_round < 0:
        raise ConfigError(
            f"bytes_per_param={bytes_per_param} (allowed >= 1), "
            f"clients_per_round={clients_per_round} (allowed >= 0)"
        )
    is_shapes = isinstance(model, Sequence) and not isinstance(model, str)
    shapes = list(model) if is_shapes else lora_target_shapes(model, target_modules)
    return 2 * clients_per_round * lora_params(shapes, rank) * bytes_per_param


@dataclass(frozen=True)
class Traffic:
    """Bytes sent by the server to clients and received back from them."""

    sent: int = 0
    received: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.received

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.sent + other.sent, self.received + other.received)


class CommLedger:
    """Measured request/response byte counts, per round and client."""

    def __init__(self) -> None:
        self._rows: dict[int, dict[str, Traffic]] = defaultdict(dict)

    def record(self, round: int, client: str | int, sent: int, received: int) -> None:
        if sent < 0 or received < 0:
            raise ConfigError(f"byte counts must be >= 0; got sent={sent}, received={received}")
        row = self._rows[round]
        key = str(client)
        row[key] = row.get(key, Traffic()) + Traffic(int(sent), int(received))

    def per_client(self, round: int) -> dict[str, Traffic]:
        return dict(self._rows.get(round, {}))

    def per_round(self) -> dict[int, Traffic]:
        return {r: sum(row.values(), Traffic()) for r, row in sorted(self._rows.items())}

    def total(self) -> Traffic:
        return sum(self.per_round().values(), Traffic())

    def to_rows(self) -> list[dict[str, int | str]]:
        """Flat rows (round, client, sent, received) for CSV/JSON run logs."""
        return [
            {"round": r, "client": c, "sent": t.sent, "received": t.received}
            for r, row in sorted(self._rows.items())
            for c, t in sorted(row.items())
        ]
