"""LoRA adapters on the server policy (server.lora, peft): only the adapter trains, a resumed
run is exact, final_model is the merged plain model, bad settings name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_trainer import CONFIG, SUITE, comparable, fresh_model
from test_trainer import trained_state as trained_state  # the tiny SFT model (a fixture)

from fedgrpo.errors import ConfigError
from fedgrpo.scenarios.loader import load_scenario
from fedgrpo.scenarios.mapping import lora_spec
from fedgrpo.server.adapters import LoraSpec, is_adapted, merged_copy, wrap_lora
from fedgrpo.server.gathering.base import CentralGatherer
from fedgrpo.server.grpo.config import GRPOConfig
from fedgrpo.server.trainer import FedGRPOTrainer

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
SPEC = LoraSpec(rank=4, alpha=8)
LORA_CONFIG = GRPOConfig(**{**CONFIG.__dict__, "lr": 2e-2})


def _starts_right(completion: str, reference: str) -> bool:
    """A reward the 40-step test model earns some of the time: its completion starts with the
    answer's first digit (it never writes a whole right answer, so exact rewards are flat)."""
    return completion.strip()[:1] == reference[:1]


def lora_trainer(state: dict[str, Any]) -> FedGRPOTrainer:
    model = wrap_lora(fresh_model(state), SPEC, seed=3)
    return FedGRPOTrainer(
        model, state["tok"], SUITE, CentralGatherer(_starts_right), None, LORA_CONFIG, seed=3,
        baseline="central_grpo",
    )  # fmt: skip


def _logits(model: Any, tok: Any) -> Any:
    import torch

    ids = torch.tensor([tok("Q: 12+34\nA:")["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_the_adapter_starts_equal_and_only_it_trains(trained_state: dict[str, Any]) -> None:
    import torch

    base = fresh_model(trained_state)
    trainer = lora_trainer(trained_state)
    assert torch.equal(_logits(base, trained_state["tok"]), _logits(trainer.model, trained_state["tok"]))
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    opt_params = sum(p.numel() for g in trainer.optimizer.param_groups for p in g["params"])
    assert opt_params == sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert opt_params < sum(p.numel() for p in base.parameters()) / 4
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    records = [trainer.step() for _ in range(4)]
    assert any(r["updated"] for r in records)
    after = trainer.model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all("lora_B" in k or "lora_A" in k for k in moved)  # the base is frozen
    assert any("lora_B" in k for k in moved)


def test_resume_with_an_adapter_reproduces_the_uninterrupted_run(
    trained_state: dict[str, Any], tmp_path: Path
) -> None:
    straight = lora_trainer(trained_state)
    full = [comparable(straight.step()) for _ in range(4)]
    first = lora_trainer(trained_state)
    part = [comparable(first.step()) for _ in range(2)]
    first.save_checkpoint(tmp_path / "ckpt")
    del first
    resumed = lora_trainer(trained_state)
    resumed.load_checkpoint(tmp_path / "ckpt")
    part += [comparable(resumed.step()) for _ in range(2)]
    assert part == full
    assert any(r["updated"] for r in full)


def test_merged_copy_is_the_plain_model_with_the_same_outputs(trained_state: dict[str, Any]) -> None:
    import torch

    trainer = lora_trainer(trained_state)
    for _ in range(3):
        trainer.step()
    merged = merged_copy(trainer.model)
    assert not is_adapted(merged) and is_adapted(trainer.model)  # the trainer's is untouched
    assert not any("lora_" in k for k in merged.state_dict())
    tok = trained_state["tok"]
    torch.testing.assert_close(_logits(merged, tok), _logits(trainer.model, tok), rtol=1e-4, atol=1e-4)
    base = fresh_model(trained_state)
    assert merged_copy(base) is base


def test_bad_lora_settings_name_the_field(tmp_path: Path) -> None:
    path = LIBRARY / "quickstart.yaml"
    with pytest.raises(ConfigError, match=r"server\.lora\.rank"):
        load_scenario(path, ["server.lora.rank=0"])
    with pytest.raises(ConfigError, match=r"server\.lora\.dropout"):
        load_scenario(path, ["server.lora.dropout=1.5"])
    s = load_scenario(path, ["server.lora.rank=4", "server.lora.target_modules=[c_attn]"])
    assert lora_spec(s) == LoraSpec(4, 32, 0.0, ("c_attn",))
    assert lora_spec(load_scenario(path, [])) is None
    with pytest.raises(ConfigError, match="rank=0"):
        LoraSpec(rank=0)


def test_unknown_target_module_is_a_clear_error(trained_state: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"target_modules.*no_such_proj"):
        wrap_lora(fresh_model(trained_state), LoraSpec(4, 8, 0.0, ("no_such_proj",)))


def test_a_lora_run_saves_a_merged_final_model(tmp_path: Path) -> None:
    from tiny_zoo import use_tiny_zoo
    from transformers import AutoModelForCausalLM

    from fedgrpo.experiments.runner import run_scenario

    mp = pytest.MonkeyPatch()
    try:
        use_tiny_zoo(mp, tmp_path / "models", weak_steps=3, sized=True)
        sets = [
            "rounds=2", "selection.aux_size=6", "selection.L=3",
            "server.grpo.questions_per_round=2", "server.grpo.group_size=3",
            "server.grpo.max_new_tokens=8", "tasks.train_per_domain=40",
            "tasks.test_per_domain=4", "tasks.aux_pool_per_domain=4", "eval.per_domain=2",
            "outputs.progress=false", "outputs.plots=false",
            "server.lora.rank=4", "server.grpo.lr=1e-2",
        ]  # fmt: skip
        summary = run_scenario(load_scenario(LIBRARY / "quickstart.yaml", sets), tmp_path / "runs")
    finally:
        mp.undo()
    assert summary["status"] == "finished", summary
    final = tmp_path / "runs" / "final_model"
    model = AutoModelForCausalLM.from_pretrained(final)  # a plain HF directory, no peft needed
    assert not any("lora_" in k for k in model.state_dict())


def test_the_adapter_init_is_a_function_of_the_seed(trained_state: dict[str, Any]) -> None:
    """peft draws A from torch's global generator: wrap_lora seeds it from the run's seed, so
    two runs get the same adapter (and the same gradients), and leaves the global state alone."""
    import torch

    def a_weights(seed: int) -> dict[str, Any]:
        base = fresh_model(trained_state)
        torch.manual_seed(123)
        torch.rand(seed)  # whatever the global generator did before
        state = torch.random.get_rng_state()
        model = wrap_lora(base, SPEC, seed=seed % 2)
        assert torch.equal(torch.random.get_rng_state(), state)  # left as it was
        return {k: v.clone() for k, v in model.state_dict().items() if "lora_A" in k}

    first, again, other = a_weights(2), a_weights(4), a_weights(3)  # seeds 0, 0, 1
    assert first and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
