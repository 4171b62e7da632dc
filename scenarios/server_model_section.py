"""Scenario fields for running a real server model: prompt, device, precision, speed options.

``ServerModelFields`` is a base of :class:`fedgrpo.scenarios.schema.ServerSection`, so these
are ``server.device``, ``server.dtype``, ``server.gradient_checkpointing``, ``server.compile``
and ``server.prompt`` in a scenario file. The runtime objects they configure are
:class:`fedgrpo.server.device.DeviceConfig` and :class:`fedgrpo.server.prompting.PromptConfig`
(built by :func:`fedgrpo.scenarios.mapping.device_config` / ``prompt_config``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedgrpo.scenarios.fields import err
from fedgrpo.server.adapters import ALL_LINEAR, LoraSpec
from fedgrpo.server.prompting import DEFAULT_SYSTEM

_CONFIG = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)
_LORA = LoraSpec()  # the adapter defaults, defined once (server.adapters)


class PromptSection(BaseModel):
    """``server.prompt``: how questions are put to the server model."""

    model_config = _CONFIG

    # auto: the chat template + exemplars when the tokenizer has a chat template (instruct
    # models), else the plain zoo format `Q: 27+48\nA:` (base models, the tiny zoo)
    style: Literal["auto", "plain", "chat"] = "auto"
    # worked exemplars (auxiliary-pool items) shown as earlier chat turns; chat style only
    shots: Annotated[int, Field(ge=0, le=16)] = 3
    # domain: exemplars of the question's own task family; mixed: one set for every question
    exemplars: Literal["domain", "mixed"] = "domain"
    # the exemplars' rationale line: equation `27+48 = 75` or the zoo's worked `7+8=15,2+4+1=7`
    rationale: Literal["equation", "worked"] = "equation"
    # the chat's system message; null = the chat template's own default
    system: str | None = DEFAULT_SYSTEM


class LoraSection(BaseModel):
    """``server.lora``: train a LoRA adapter (peft) instead of every weight."""

    model_config = _CONFIG

    rank: Annotated[int, Field(ge=1, le=1024)] = _LORA.rank
    alpha: Annotated[int, Field(ge=1, le=4096)] = _LORA.alpha  # the update is scaled by alpha / rank
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = _LORA.dropout
    # "all-linear" (every linear layer but the output head) or a list of module names
    target_modules: str | list[str] = ALL_LINEAR


class ServerModelFields(BaseModel):
    """Where and how the server model runs (fields of ``server``)."""

    model_config = _CONFIG

    # auto: the first CUDA GPU if torch sees one, else the CPU; cuda without a GPU is an error
    device: str = "auto"
    # auto: bfloat16 on a GPU that has it (else float16), float32 on the CPU
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # recompute activations in the backward pass: less memory, ~30 % more compute
    gradient_checkpointing: bool = False
    # torch.compile the forward pass (pays a compile on the first rounds; for GPUs)
    compile: bool = False
    prompt: PromptSection = Field(default_factory=PromptSection)
    # a LoRA adapter trained in place of the full model (null: full fine-tuning); LoRA wants a
    # ~10x larger server.grpo.lr
    lora: LoraSection | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        from fedgrpo.errors import ConfigError
        from fedgrpo.server.device import check_device_name

        try:
            return check_device_name(value)
        except ConfigError:
            raise err(
                "device",
                "{value} is not a device; use auto, cpu, cuda or cuda:N (N = GPU index)",
                value=repr(value),
            ) from None
