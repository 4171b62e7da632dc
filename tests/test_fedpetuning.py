"""The FedPETuning-style LoRA baseline on a tiny real model with real peft adapters."""

from __future__ import annotations

import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.server.baselines.fedpetuning import (
    FedPETuningConfig,
    fedavg,
    run_fedpetuning,
    state_bytes,
)
from fedgrpo.server.tasks import build_suite
from fedgrpo.server.zoo.architectures import TinyArch, build_tiny_model
from fedgrpo.server.zoo.tokenizer import build_char_tokenizer, wrap_for_transformers

SUITE = build_suite(["add", "sort"], seed=0, train_per_domain=40, test_per_domain=5, aux_pool_per_domain=5)


def test_fedavg_is_the_weighted_mean() -> None:
    import torch

    a = {"w": torch.tensor([0.0, 4.0])}
    b = {"w": torch.tensor([2.0, 0.0])}
    out = fedavg([a, b], [1.0, 3.0])
    assert torch.allclose(out["w"], torch.tensor([1.5, 1.0]))
    with pytest.raises(ConfigError, match="one weight per state"):
        fedavg([a], [1.0, 2.0])
    with pytest.raises(ConfigError, match="sum to > 0"):
        fedavg([a, b], [0.0, 0.0])


@pytest.mark.filterwarnings("ignore:fan_in_fan_out")
def test_short_run_trains_only_the_adapter_and_counts_its_bytes() -> None:
    import torch

    torch.set_num_threads(1)
    tok = wrap_for_transformers(build_char_tokenizer())
    model = build_tiny_model(TinyArch(layers=1, hidden=32, heads=2, max_positions=64), tok, seed=0)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    clients = [[(i.prompt, i.completion) for i in SUITE.train(d)] for d in SUITE.domains]
    cfg = FedPETuningConfig(rounds=3, local_steps=3, batch_size=8, lr=5e-3, rank=4, seed=1)
    result = run_fedpetuning(model, tok, clients, cfg)
    assert [r["round"] for r in result.records] == [1, 2, 3]
    assert result.records[-1]["loss"] < result.records[0]["loss"]
    from peft import get_peft_model_state_dict

    adapter = get_peft_model_state_dict(result.model)
    assert result.adapter_bytes == state_bytes(adapter) > 0
    assert result.bytes_total == 3 * 2 * 2 * result.adapter_bytes  # rounds x (down+up) x clients
    frozen = result.model.get_base_model().state_dict()
    checked = 0
    for key, value in frozen.items():  # the base weights never move: only LoRA trains
        if "lora_" not in key:
            assert torch.equal(value, base[key.replace(".base_layer", "")]), key
            checked += 1
    assert checked >= len(base) - 1  # (a tied lm_head may appear once)
    again = run_fedpetuning(
        build_tiny_model(TinyArch(layers=1, hidden=32, heads=2, max_positions=64), tok, seed=0),
        tok, clients, cfg,
    )
    assert [r["loss"] for r in again.records] == [r["loss"] for r in result.records]  # seeded


def test_bad_config_and_empty_clients_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="must be >= 1"):
        FedPETuningConfig(local_steps=0)
    tok = wrap_for_transformers(build_char_tokenizer())
    model = build_tiny_model(TinyArch(layers=1, hidden=32, heads=2, max_positions=64), tok, seed=0)
    with pytest.raises(ConfigError, match="at least one"):
        run_fedpetuning(model, tok, [[]], FedPETuningConfig(rounds=1))
