"""The round loop on a tiny real model: baselines, masking, checkpoints and exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgrpo.edge.protocol import CompetenceRequest, RewardResponse, ScoreRequest
from fedgrpo.errors import ConfigError
from fedgrpo.selection.selectors import RandomSelector
from fedgrpo.server.gathering.base import CentralGatherer
from fedgrpo.server.gathering.inprocess import DirectGatherer
from fedgrpo.server.grpo.config import GRPOConfig
from fedgrpo.server.tasks import build_suite
from fedgrpo.server.trainer import FedGRPOTrainer
from fedgrpo.server.zoo.architectures import TinyArch, build_tiny_model
from fedgrpo.server.zoo.tokenizer import build_char_tokenizer, wrap_for_transformers
from fedgrpo.server.zoo.train import TrainConfig, train_sft

SUITE = build_suite(["add", "sort"], seed=0, train_per_domain=60, test_per_domain=10, aux_pool_per_domain=10)
CONFIG = GRPOConfig(group_size=4, questions_per_round=3, max_new_tokens=24, lr=1e-3)


@pytest.fixture(scope="module")
def trained_state() -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    tok = wrap_for_transformers(build_char_tokenizer())
    model = build_tiny_model(TinyArch(layers=1, hidden=32, heads=2, max_positions=64), tok, seed=0)
    train_sft(model, tok, [(i.prompt, i.completion) for i in SUITE.train()], TrainConfig(steps=40, batch_size=16), seed=0)
    return {"tok": tok, "state": {k: v.clone() for k, v in model.state_dict().items()}}


def fresh_model(trained_state: dict[str, Any]) -> Any:
    model = build_tiny_model(TinyArch(layers=1, hidden=32, heads=2, max_positions=64), trained_state["tok"], seed=0)
    model.load_state_dict(trained_state["state"])
    return model


def make_trainer(trained_state: dict[str, Any], gatherer: Any = None, baseline: str = "central_grpo") -> FedGRPOTrainer:
    return FedGRPOTrainer(
        fresh_model(trained_state), trained_state["tok"], SUITE, gatherer or CentralGatherer(), None,
        CONFIG, seed=3, baseline=baseline,
    )


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "compute_s"}


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(trained_state: dict[str, Any], tmp_path: Path) -> None:
    straight = make_trainer(trained_state)
    full = [comparable(straight.step()) for _ in range(4)]

    first = make_trainer(trained_state)
    part = [comparable(first.step()) for _ in range(2)]
    first.save_checkpoint(tmp_path / "ckpt")
    del first  # the "crash"
    resumed = make_trainer(trained_state)
    resumed.load_checkpoint(tmp_path / "ckpt")
    assert resumed.state.round == 2
    part += [comparable(resumed.step()) for _ in range(2)]
    assert part == full
    assert any(r["updated"] for r in full)  # the test is about a run that really trains


def test_checkpoint_is_atomic_and_seed_mismatch_is_refused(trained_state: dict[str, Any], tmp_path: Path) -> None:
    trainer = make_trainer(trained_state)
    trainer.step()
    path = trainer.save_checkpoint(tmp_path)
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    other = FedGRPOTrainer(fresh_model(trained_state), trained_state["tok"], SUITE, CentralGatherer(), None, CONFIG, seed=4, baseline="central_grpo")
    with pytest.raises(ConfigError, match="seed 3 but this run uses 4"):
        other.load_checkpoint(tmp_path)


def test_zero_shot_never_changes_the_model(trained_state: dict[str, Any]) -> None:
    trainer = make_trainer(trained_state, baseline="zero_shot")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rec = trainer.step()
    assert rec["updated"] is False
    assert all((before[k] == v).all() for k, v in trainer.model.state_dict().items())


def _client(values: float | None, calls: list[str]) -> Any:
    def call(request: ScoreRequest | CompetenceRequest) -> RewardResponse:
        calls.append(request.request_id)
        if values is None:
            raise RuntimeError("device crashed")
        return RewardResponse(request.request_id, "c", tuple(values for _ in range(len(request))))

    return call


def test_failed_experts_leave_rewards_missing_not_zero(trained_state: dict[str, Any]) -> None:
    calls: list[str] = []
    gatherer = DirectGatherer([_client(1.0, calls), _client(None, calls)], dispatch="split")
    trainer = FedGRPOTrainer(
        fresh_model(trained_state), trained_state["tok"], SUITE, gatherer, RandomSelector(2, M=2),
        CONFIG, seed=0,
    )
    rec = trainer.step()
    assert rec["asked"] == 6 and rec["answered"] == 3 and rec["failed"] == 3
    assert rec["coverage"] == pytest.approx(0.5)  # half the candidates have no reward at all
    assert rec["reward_mean"] == pytest.approx(1.0)  # masked, not averaged in as zeros
    # each group keeps its 2 answered candidates (>= 2: a group), all rewarded 1.0 -> zero
    # advantages: the update carries no policy gradient (a zero in place of NaN would have),
    # so no group counts as carrying signal
    assert rec["groups_with_signal"] == 0
    assert rec["loss"] == pytest.approx(0.0, abs=1e-7)


def test_all_missing_round_is_an_empty_update(trained_state: dict[str, Any]) -> None:
    gatherer = DirectGatherer([_client(None, []), _client(None, [])])
    trainer = FedGRPOTrainer(
        fresh_model(trained_state), trained_state["tok"], SUITE, gatherer, RandomSelector(2, M=2), CONFIG, seed=0,
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rec = trainer.step()
    assert rec["coverage"] == 0.0 and rec["groups_with_signal"] == 0 and rec["updated"] is False
    assert all((before[k] == v).all() for k, v in trainer.model.state_dict().items())


def test_rollout_layout_and_old_logps(trained_state: dict[str, Any]) -> None:
    import torch

    from fedgrpo.server.generation import SamplingParams
    from fedgrpo.server.rollout import completion_logps, rollout

    model, tok = fresh_model(trained_state), trained_state["tok"]
    items = SUITE.test()[:3]
    batch = rollout(model, tok, [i.question for i in items], [i.prompt for i in items], 4,
                    SamplingParams(24, 1.0), torch.Generator().manual_seed(0))
    assert batch.input_ids.shape[0] == 12 and len(batch.completions) == 12
    lengths = batch.completion_mask.sum(1)
    assert (lengths >= 1).all()
    # completion tokens are right-aligned after the prompt and the mask marks exactly them
    with torch.no_grad():
        again = completion_logps(model, batch.input_ids, batch.attention_mask, batch.completion_length)
    assert torch.allclose(again * batch.completion_mask, batch.old_logps * batch.completion_mask, atol=1e-5)
    same = rollout(model, tok, [i.question for i in items], [i.prompt for i in items], 4,
                   SamplingParams(24, 1.0), torch.Generator().manual_seed(0))
    assert same.completions == batch.completions  # seeded sampling is reproducible
    assert np.isfinite(batch.old_logps.numpy()).all()


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        GRPOConfig(group_size=1)


def test_signal_groups_counts_only_groups_whose_rewards_vary() -> None:
    import numpy as np

    from fedgrpo.server.grpo.rewards import signal_groups

    nan = float("nan")
    rewards = np.array(
        [[1, 1, 1, 1], [0, 1, 0, 0], [nan, 1, nan, nan], [nan, 0, 1, nan], [0, 0, 0, 0]],
        dtype=float,
    )
    assert signal_groups(rewards) == 2


def test_shuffle_within_groups_permutes_each_row_only() -> None:
    import numpy as np

    from fedgrpo.server.grpo.rewards import shuffle_within_groups

    rewards = np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.25, 1.0, 0.0]])
    out = shuffle_within_groups(rewards, np.random.default_rng(0))
    assert [sorted(r) for r in out.tolist()] == [sorted(r) for r in rewards.tolist()]
    again = shuffle_within_groups(rewards, np.random.default_rng(0))
    assert (out == again).all()


def test_share_prompt_round_matches_the_plain_round(trained_state: dict[str, Any]) -> None:
    """server.grpo.share_prompt changes the computation, not the round: the same samples
    (greedy-equal logits up to rounding), rewards, loss and updated weights, within float error."""
    import dataclasses

    import torch

    records, weights, positions = [], [], []
    for share in (False, True):
        trainer = FedGRPOTrainer(
            fresh_model(trained_state), trained_state["tok"], SUITE, CentralGatherer(), None,
            dataclasses.replace(CONFIG, share_prompt=share), seed=3, baseline="central_grpo",
        )  # fmt: skip
        seen: list[int] = []
        trainer.model.register_forward_pre_hook(
            lambda _m, _a, kw, seen=seen: seen.append(kw["input_ids"].numel()), with_kwargs=True
        )
        records.append(trainer.step())
        positions.append(sum(seen))
        weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    plain, shared = records
    assert positions[1] < 0.8 * positions[0], positions  # the option reaches every pass
    assert plain["updated"] and shared["updated"]
    assert plain["reward_mean"] == shared["reward_mean"]
    assert abs(plain["loss"] - shared["loss"]) < 1e-5
    for name, w in weights[0].items():
        assert torch.allclose(w, weights[1][name], atol=1e-6), name
