"""Where the server model runs and in which precision (``server.device``, ``server.dtype``).

``auto`` picks the first CUDA GPU when torch sees one and the CPU otherwise; ``dtype: auto``
is bfloat16 on a GPU that supports it (float16 on one that does not) and float32 on the CPU.
Asking for ``cuda`` on a machine without a GPU is a :class:`fedgrpo.errors.ConfigError` that
names the field and the fix, raised before any model is loaded.

Options that trade memory or start-up time for speed are applied here too, never in the
trainer: gradient checkpointing (recompute activations in the backward pass: less memory for
long completions, ~30 % more compute) and ``torch.compile`` of the forward pass.

Several GPUs: run the same scenario under ``accelerate launch`` (see README, *Real pretrained
models*); one process per GPU then picks ``cuda:LOCAL_RANK`` with ``device: auto``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedgrpo.errors import ConfigError

if TYPE_CHECKING:
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class DeviceConfig:
    """``server.device``/``dtype``/``gradient_checkpointing``/``compile`` of a scenario."""

    device: str = "auto"
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"server.dtype: {self.dtype!r} is unknown; use one of {', '.join(DTYPES)}"
            )


def check_device_name(value: str) -> str:
    """``value`` if it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; a ConfigError otherwise."""
    if not _DEVICE_RE.match(value):
        raise ConfigError(
            f"server.device: {value!r} is not a device; use auto, cpu, cuda or cuda:N (N = GPU index)"
        )
    return value


def cuda_count() -> int:
    """GPUs torch can use here (0 without CUDA or without a CUDA build of torch)."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(name: str, gpus: int | None = None) -> str:
    """``auto|cpu|cuda|cuda:N`` -> a concrete torch device string, checked against the GPUs
    present (``gpus``: their count, default what torch sees)."""
    check_device_name(name)
    count = cuda_count() if gpus is None else gpus
    if name == "cpu":
        return "cpu"
    if name == "auto":
        if count == 0:
            return "cpu"
        rank = int(os.environ.get("LOCAL_RANK", "0"))  # accelerate / torchrun: one GPU each
        return f"cuda:{rank % count}"
    index = int(name.split(":")[1]) if ":" in name else 0
    if count == 0:
        raise ConfigError(
            f"server.device: {name!r} but torch sees no CUDA GPU here (torch.cuda.is_available() "
            "is False: no GPU, no driver, or a CPU-only torch build); use device: auto (CPU when "
            "there is no GPU) or device: cpu, or install a CUDA build of torch on a GPU machine"
        )
    if index >= count:
        raise ConfigError(
            f"server.device: {name!r} but only {count} GPU(s) are visible (cuda:0..cuda:{count - 1}); "
            "pick one of those or use device: auto"
        )
    return f"cuda:{index}" if ":" in name else "cuda:0"


def resolve_dtype(name: str, device: str, bf16_ok: bool | None = None) -> str:
    """``auto|float32|bfloat16|float16`` -> a concrete dtype name for ``device``."""
    if name not in DTYPES:
        raise ConfigError(f"server.dtype: {name!r} is unknown; use one of {', '.join(DTYPES)}")
    on_gpu = device.startswith("cuda")
    if name == "float16" and not on_gpu:
        raise ConfigError(
            "server.dtype: 'float16' on the CPU is not supported for training (no fp16 CPU "
            "kernels for the backward pass); use float32 or bfloat16 on the CPU, or a GPU"
        )
    if name != "auto":
        return name
    if not on_gpu:
        return "float32"
    if bf16_ok is None:
        import torch

        bf16_ok = bool(torch.cuda.is_bf16_supported())
    return "bfloat16" if bf16_ok else "float16"


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@dataclass(frozen=True)
class Placement:
    """The resolved device and dtype of a run (what ``provenance`` and records report)."""

    device: str
    dtype: str


def place(config: DeviceConfig, gpus: int | None = None) -> Placement:
    """Resolve ``config`` on this machine (raises ConfigError before any model is loaded)."""
    device = resolve_device(config.device, gpus)
    return Placement(device, resolve_dtype(config.dtype, device))


def prepare_model(model: Any, config: DeviceConfig, placement: Placement) -> Any:
    """Move ``model`` to the placement and apply the memory/speed options; returns it."""
    model = model.to(device=placement.device, dtype=torch_dtype(placement.dtype))
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # training forward; generate turns the cache back on
    if config.compile:
        import torch

        model.forward = torch.compile(model.forward, dynamic=True)
    return model
