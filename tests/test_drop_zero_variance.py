"""server.grpo.drop_zero_variance: flat groups leave the update, which is otherwise GRPO's.

On a tiny real model: the update with the option equals the plain update given only the
groups whose rewards vary; without it the flat groups shrink the step (loss_type grpo
divides by every sequence); a round with no varying group takes no optimizer step."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from fedgrpo.server.gathering.base import CentralGatherer
from fedgrpo.server.generation import SamplingParams
from fedgrpo.server.grpo.config import GRPOConfig
from fedgrpo.server.grpo.rewards import signal_mask
from fedgrpo.server.rollout import completion_logps, rollout, signal_only, take_groups
from fedgrpo.server.tasks import build_suite
from fedgrpo.server.trainer import FedGRPOTrainer
from fedgrpo.server.zoo.architectures import TinyArch, build_tiny_model
from fedgrpo.server.zoo.tokenizer import build_char_tokenizer, wrap_for_transformers

SUITE = build_suite(["add"], seed=0, train_per_domain=20, test_per_domain=6, aux_pool_per_domain=4)
ARCH = TinyArch(layers=1, hidden=32, heads=2, max_positions=64)
# SGD without clipping: the step is proportional to the gradient, so dilution shows
CONFIG = GRPOConfig(
    group_size=4, questions_per_round=3, max_new_tokens=12, lr=0.5, optimizer="sgd", grad_clip=1e9
)
# group 0 varies, groups 1 and 2 are flat (all wrong, all right)
REWARDS = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    tok = wrap_for_transformers(build_char_tokenizer())
    model = build_tiny_model(ARCH, tok, seed=0)
    items = SUITE.test()[:3]
    batch = rollout(model, tok, [i.question for i in items], [i.prompt for i in items], 4,
                    SamplingParams(12, 1.0), torch.Generator().manual_seed(0))  # fmt: skip
    return {
        "tok": tok,
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "batch": batch,
    }


def trainer(setup: dict[str, Any], drop: bool) -> FedGRPOTrainer:
    model = build_tiny_model(ARCH, setup["tok"], seed=0)
    model.load_state_dict(setup["state"])
    config = dataclasses.replace(CONFIG, drop_zero_variance=drop)
    return FedGRPOTrainer(model, setup["tok"], SUITE, CentralGatherer(), None, config,
                          seed=0, baseline="central_grpo")  # fmt: skip


def step_of(t: FedGRPOTrainer, setup: dict[str, Any]) -> dict[str, Any]:
    return {k: v - setup["state"][k] for k, v in t.model.state_dict().items()}


def test_take_groups_keeps_the_rows_of_the_chosen_questions(setup: dict[str, Any]) -> None:
    import torch

    batch = setup["batch"]
    sub = take_groups(batch, [2, 0], 4)
    rows = [8, 9, 10, 11, 0, 1, 2, 3]
    assert sub.questions == [batch.questions[2], batch.questions[0]]
    assert sub.completions == [batch.completions[i] for i in rows]
    assert torch.equal(sub.input_ids, batch.input_ids[rows])
    assert torch.equal(sub.old_logps, batch.old_logps[rows])
    assert sub.candidates(1) == batch.candidates(0)
    t = trainer(setup, drop=False)
    with torch.no_grad():
        full = completion_logps(
            t.model, batch.input_ids, batch.attention_mask, batch.completion_length
        )
        part = completion_logps(t.model, sub.input_ids, sub.attention_mask, sub.completion_length)
    assert torch.allclose(part, full[rows], atol=1e-6)


def test_signal_only_drops_flat_groups_and_keeps_all_or_none(setup: dict[str, Any]) -> None:
    batch = setup["batch"]
    assert signal_mask(REWARDS).tolist() == [True, False, False]
    sub, rewards = signal_only(batch, REWARDS)
    assert sub.questions == batch.questions[:1] and rewards.tolist() == REWARDS[:1].tolist()
    flat = np.zeros((3, 4))
    assert signal_only(batch, flat)[0] is batch
    varied = np.tile(REWARDS[:1], (3, 1))
    assert signal_only(batch, varied)[0] is batch


def test_dropping_equals_the_plain_update_on_the_varying_groups(setup: dict[str, Any]) -> None:
    import torch

    batch = setup["batch"]
    dropped = trainer(setup, drop=True)
    out = dropped._update(batch, REWARDS)
    assert out["updated"] and out["groups_with_signal"] == 1
    alone = trainer(setup, drop=False)
    alone._update(take_groups(batch, [0], 4), REWARDS[:1])
    diluted = trainer(setup, drop=False)
    assert diluted._update(batch, REWARDS)["groups_with_signal"] == 1
    a, b, c = step_of(dropped, setup), step_of(alone, setup), step_of(diluted, setup)
    moved = [k for k in a if a[k].abs().max() > 1e-6]
    assert moved, "the update must move the weights"
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-7), k
    # plain GRPO divides by all 12 sequences, 8 of them flat: a third of the step
    norm_a = sum(float(a[k].norm() ** 2) for k in moved) ** 0.5
    norm_c = sum(float(c[k].norm() ** 2) for k in moved) ** 0.5
    assert norm_c / norm_a == pytest.approx(1 / 3, rel=1e-3)


def test_a_round_without_varying_groups_takes_no_step(setup: dict[str, Any]) -> None:
    import torch

    flat = np.array([[0.0] * 4, [1.0] * 4, [0.5] * 4])
    t = trainer(setup, drop=True)
    out = t._update(setup["batch"], flat)
    assert not out["updated"] and out["loss"] is None and out["groups_with_signal"] == 0
    assert all(torch.equal(v, setup["state"][k]) for k, v in t.model.state_dict().items())
    assert not t.optimizer.state  # no step: the optimizer never saw a gradient
    plain = trainer(setup, drop=False)
    assert plain._update(setup["batch"], flat)["updated"]  # TRL's behaviour: a zero step
