"""Analytic LoRA communication and the measured-bytes ledger."""

from __future__ import annotations

import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.server.comm import (
    CommLedger,
    Traffic,
    lora_bytes_per_round,
    lora_params,
    lora_target_shapes,
)

GPT2_SMALL = {"n_embd": 768, "n_layer": 12}


def test_gpt2_hand_computed() -> None:
    # c_attn 768→2304, rank 8: 8·(768+2304) = 24,576 params/layer; ×12 = 294,912 params;
    # fp32 → 1,179,648 B each way; ×2 (down+up) ×10 clients = 23,592,960 B
    assert lora_params(lora_target_shapes(GPT2_SMALL)) == 294_912
    assert lora_bytes_per_round(GPT2_SMALL, rank=8, clients_per_round=10) == 23_592_960
    # attention in and out (c_attn + attn.c_proj): + 8·(768+768)·12 = 147,456 params
    both = lora_bytes_per_round(GPT2_SMALL, target_modules=["c_attn", "o"])
    assert both == 2 * 4 * (294_912 + 147_456)
    # "c_proj" matches both attention and MLP projections, as PEFT's suffix match
    shapes = lora_target_shapes(GPT2_SMALL, ["c_proj"])
    assert sorted(set(shapes)) == [(768, 768), (3072, 768)] and len(shapes) == 24


def test_llama_like_gqa() -> None:
    cfg = {
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
    }
    # q: 64→64, v: 64→32 (2 kv heads × 16); rank 4: 4·128 + 4·96 = 896 per layer, 1792 total
    assert lora_params(lora_target_shapes(cfg), rank=4) == 1792
    assert lora_bytes_per_round(cfg, rank=4, bytes_per_param=2, clients_per_round=3) == 21_504
    q_only = lora_params(lora_target_shapes(cfg, ["q", "k", "v", "o"]), rank=1)
    assert q_only == 2 * (128 + 96 + 96 + 128)


def test_shapes_list_and_errors() -> None:
    assert lora_bytes_per_round([(10, 20)], rank=2) == 2 * 2 * 30 * 4
    with pytest.raises(ConfigError, match="allowed"):
        lora_target_shapes(GPT2_SMALL, ["q_proj"])
    with pytest.raises(ConfigError, match="n_embd"):
        lora_target_shapes({"d_model": 8})
    with pytest.raises(ConfigError, match="rank"):
        lora_bytes_per_round(GPT2_SMALL, rank=0)


def test_ledger_totals() -> None:
    led = CommLedger()
    led.record(0, "a", 100, 10)
    led.record(0, "b", 200, 20)
    led.record(0, "a", 50, 5)  # a second request in the same round adds up
    led.record(1, 3, 400, 40)
    assert led.per_client(0) == {"a": Traffic(150, 15), "b": Traffic(200, 20)}
    assert led.per_round() == {0: Traffic(350, 35), 1: Traffic(400, 40)}
    assert led.total() == Traffic(750, 75) and led.total().total == 825
    assert len(led.to_rows()) == 3 and led.per_client(9) == {}
    with pytest.raises(ConfigError):
        led.record(0, "a", -1, 0)
