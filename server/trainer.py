"""The FedGRPO round loop: sample questions, roll out, select experts, gather rewards, update.

Everything random is derived from ``(seed, round)``, so a run resumed from a checkpoint at
round r draws exactly what the uninterrupted run drew from round r on; the checkpoint holds
the model, the optimizer, the round counter and the competence matrix.

Where this departs from the paper's description (see also ``server.grpo``):
missing rewards are masked rather than zeroed, and the auxiliary-set embeddings come from
the *initial* (frozen) server model so they never drift during training.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedgrpo.errors import ConfigError
from fedgrpo.rounds.record import flat
from fedgrpo.selection.competence import CompetenceMatrix
from fedgrpo.selection.selectors import Selector
from fedgrpo.server.gathering.base import GatherRequest, GatherResult, RewardGatherer
from fedgrpo.server.generation import SamplingParams
from fedgrpo.server.grpo import combine, group_advantages, grpo_loss
from fedgrpo.server.grpo.config import GRPOConfig
from fedgrpo.server.grpo.rewards import shuffle_within_groups, signal_groups
from fedgrpo.server.rollout import RolloutBatch, completion_logps, rollout
from fedgrpo.server.tasks import TaskItem, TaskSuite
from fedgrpo.server.zoo.evaluate import EvalResult, evaluate_on_suite

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BASELINES = ("fedgrpo", "central_grpo", "zero_shot")


def round_rngs(
    seed: int, round_index: int
) -> tuple[random.Random, np.random.Generator, torch.Generator]:
    """Independent generators for one round, a pure function of (seed, round)."""
    import torch

    py = random.Random(f"{seed}:{round_index}:questions")
    npg = np.random.default_rng([seed, round_index, 1])
    tg = torch.Generator().manual_seed(
        int(np.random.default_rng([seed, round_index, 2]).integers(2**62))
    )
    return py, npg, tg


def sample_accuracy(
    completions: Sequence[str], items: Sequence[TaskItem], group_size: int
) -> float:
    """Fraction of the round's sampled completions that are right (completion k answers
    question ``k // group_size``): the ground truth the server never sees while training."""
    from fedgrpo.edge.answer_format import is_correct

    return float(
        np.mean([is_correct(t, items[k // group_size].answer) for k, t in enumerate(completions)])
    )


@dataclass
class TrainerState:
    round: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class FedGRPOTrainer:
    """Owns the policy, its optimizer and the round loop. Model, tokenizer, selector and
    gatherer are passed in, so the loop runs on CPU with tiny models and in-process experts."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        suite: TaskSuite,
        gatherer: RewardGatherer,
        selector: Selector | None,
        config: GRPOConfig,
        seed: int = 0,
        baseline: str = "fedgrpo",
        question_embedder: Callable[[Sequence[str]], np.ndarray] | None = None,
        available_clients: Callable[[int], Sequence[int] | None] | None = None,
    ) -> None:
        import torch

        if baseline not in BASELINES:
            raise ConfigError(
                f"baseline {baseline!r} is unknown; use one of {', '.join(BASELINES)}"
            )
        if baseline == "fedgrpo" and selector is None:
            raise ConfigError("baseline 'fedgrpo' needs an expert selector")
        self.model, self.tokenizer, self.suite = model, tokenizer, suite
        self.gatherer, self.selector, self.config = gatherer, selector, config
        self.seed, self.baseline = seed, baseline
        self.embed = question_embedder
        self.available_clients = available_clients
        self.question_pool: list[TaskItem] = suite.train()
        self.optimizer: torch.optim.Optimizer
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(
                model.parameters(), lr=config.lr, momentum=config.sgd_momentum
            )
        else:
            self.optimizer = torch.optim.AdamW(
                model.parameters(),
                lr=config.lr,
                weight_decay=0.0,
                betas=(config.adam_beta1, config.adam_beta2),
            )
        self.reference = copy.deepcopy(model).eval() if config.beta > 0 else None
        if self.reference is not None:
            for p in self.reference.parameters():
                p.requires_grad_(False)
        self.state = TrainerState()
        self.competence: CompetenceMatrix | None = None

    # ------------------------------------------------------------------ one round
    def step(self) -> dict[str, Any]:
        """Run round ``state.round`` and return its metrics record."""
        cfg = self.config
        r = self.state.round
        py, npg, tg = round_rngs(self.seed, r)
        start = time.perf_counter()
        items = py.sample(self.question_pool, cfg.questions_per_round)
        params = SamplingParams(cfg.max_new_tokens, cfg.temperature, cfg.top_p)
        batch = rollout(
            self.model,
            self.tokenizer,
            [i.question for i in items],
            [i.prompt for i in items],
            cfg.group_size,
            params,
            tg,
        )
        experts = self._select(items, npg)
        result = self._gather(r, items, batch, experts, npg)
        combined = self._combine(result, len(items), r)
        update = self._update(batch, combined)
        rewarded = ~np.isnan(combined)
        record: dict[str, Any] = {
            "event": "round",
            "round": r,
            **flat(result.stats),
            "coverage": float(rewarded.mean()) if rewarded.size else 0.0,
            "groups": len(items),
            "groups_with_signal": int(update.pop("groups_with_signal")),
            "reward_mean": float(np.nanmean(combined)) if rewarded.any() else None,
            "true_accuracy_of_samples": sample_accuracy(batch.completions, items, cfg.group_size),
            "experts": experts,
            "compute_s": round(time.perf_counter() - start, 3),
            **update,
        }
        self.state.round += 1
        self.state.history.append(record)
        return record

    def _select(self, items: list[TaskItem], rng: np.random.Generator) -> list[list[int]]:
        if self.baseline != "fedgrpo" or self.selector is None:
            return [[] for _ in items]
        embeddings = self.embed([i.question for i in items]) if self.embed is not None else None
        available = self.available_clients(self.state.round) if self.available_clients else None
        return self.selector.select(embeddings, [i.domain for i in items], rng, available=available)

    def _gather(
        self,
        r: int,
        items: list[TaskItem],
        batch: RolloutBatch,
        experts: list[list[int]],
        rng: np.random.Generator,
    ) -> GatherResult:
        """Ask the round's experts to score the rolled-out candidates."""
        return self.gatherer.gather(
            GatherRequest(
                round_index=r,
                questions=[i.question for i in items],
                candidates=[batch.candidates(b) for b in range(len(items))],
                experts=experts,
                domains=[i.domain for i in items],
                answers=[i.answer for i in items],
            ),
            rng,
        )

    def _combine(self, result: GatherResult, groups: int, r: int) -> np.ndarray:
        """[groups, G] one reward per candidate from the experts' answers (NaN = none);
        shuffled within each group for the negative control."""
        cfg = self.config
        combined = np.stack(
            [
                combine(result.rewards[b], method=cfg.reward_combine, trim=cfg.trim)
                for b in range(groups)
            ]
        )
        if cfg.shuffle_rewards:
            combined = shuffle_within_groups(combined, np.random.default_rng([self.seed, r, 3]))
        return combined

    def _update(self, batch: Any, combined: np.ndarray) -> dict[str, Any]:
        import torch

        cfg = self.config
        mask = ~np.isnan(combined)
        adv, effective = group_advantages(np.nan_to_num(combined), mask, scale=cfg.scale)
        device = batch.old_logps.device  # the policy's device (server/device.py)
        adv_t = torch.as_tensor(np.asarray(adv), dtype=torch.float32, device=device).reshape(-1)
        if cfg.negative_advantage_scale != 1.0:
            adv_t = torch.where(adv_t < 0, adv_t * cfg.negative_advantage_scale, adv_t)
        seq_mask = torch.as_tensor(np.asarray(effective), dtype=torch.bool, device=device)
        seq_mask = seq_mask.reshape(-1)
        groups_with_signal = signal_groups(combined)
        out: dict[str, Any] = {
            "groups_with_signal": groups_with_signal,
            "loss": None,
            "updated": False,
        }
        if self.baseline == "zero_shot" or not bool(seq_mask.any()):
            return out
        ref = self._reference_logps(batch)
        if cfg.warmup_rounds > 0 or cfg.lr_decay_rounds > 0:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * self.lr_factor(self.state.round)
        losses: list[float] = []
        norms: list[float] = []
        for _ in range(cfg.num_iterations):
            loss, grad_norm, metrics = self._optimise(batch, ref, adv_t, seq_mask)
            norms.append(grad_norm)
            losses.append(loss)
        out.update(
            loss=float(np.mean(losses)),
            grad_norm=float(np.mean(norms)),
            updated=True,
            **{f"grpo_{k}": v for k, v in metrics.items()},
        )
        return out

    def _reference_logps(self, batch: Any) -> torch.Tensor | None:
        """The frozen reference model's completion log-probs (None without a KL term)."""
        import torch

        if self.reference is None:
            return None
        cfg = self.config
        with torch.no_grad():
            return completion_logps(
                self.reference,
                batch.input_ids,
                batch.attention_mask,
                batch.completion_length,
                cfg.temperature,
            )

    def _optimise(
        self,
        batch: Any,
        ref: torch.Tensor | None,
        adv_t: torch.Tensor,
        seq_mask: torch.Tensor,
    ) -> tuple[float, float, dict[str, float]]:
        """One optimizer step on the GRPO loss: (loss, gradient norm before clipping, the
        loss's metrics)."""
        import torch

        cfg = self.config
        logps = completion_logps(
            self.model,
            batch.input_ids,
            batch.attention_mask,
            batch.completion_length,
            cfg.temperature,
        )
        loss, metrics = grpo_loss(
            logps,
            batch.old_logps,
            ref,
            adv_t,
            batch.completion_mask,
            seq_mask,
            eps_low=cfg.eps_low,
            eps_high=cfg.eps_high,
            beta=cfg.beta,
            loss_type=cfg.loss_type,
            max_completion_length=cfg.max_new_tokens,
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        self.optimizer.step()
        return float(loss.item()), grad_norm, metrics

    def lr_factor(self, round_index: int) -> float:
        """Learning-rate multiplier at ``round_index``: linear warmup, then optional cosine decay."""
        cfg = self.config
        factor = 1.0
        if cfg.warmup_rounds > 0:
            factor = min(1.0, (round_index + 1) / cfg.warmup_rounds)
        if cfg.lr_decay_rounds > 0:
            progress = min(1.0, round_index / cfg.lr_decay_rounds)
            floor = cfg.lr_final_fraction
            factor *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        return factor

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, per_domain: int | None = None) -> EvalResult:
        return evaluate_on_suite(self.model, self.tokenizer, self.suite, per_domain)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``directory/round-XXXXX.pt`` atomically with its checksum (server.checkpoint)."""
        import io

        import torch

        from fedgrpo.server.checkpoint import write_checkpoint

        payload = {
            "round": self.state.round,
            "seed": self.seed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": asdict(self.config),
            "competence": self.competence.to_json() if self.competence is not None else None,
            "python_random": random.getstate(),
            "torch_rng": torch.get_rng_state(),
            "extra": extra or {},
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        return write_checkpoint(directory, self.state.round, buf.getvalue())

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        """Restore from the newest good checkpoint in ``directory``; returns its ``extra``.

        A damaged newest file falls back to an older good one (logged, naming both); none
        good raises :class:`server.checkpoint.CheckpointError`."""
        import io

        import torch

        from fedgrpo.server.checkpoint import read_checkpoint

        loaded = read_checkpoint(
            directory, lambda data: torch.load(io.BytesIO(data), weights_only=False)
        )
        payload = loaded.payload
        if payload["seed"] != self.seed:
            raise ConfigError(
                f"checkpoint was written with seed {payload['seed']} but this run uses {self.seed}; "
                "resume with the same scenario"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state.round = int(payload["round"])
        if payload.get("competence"):
            loaded_competence = CompetenceMatrix.from_json(payload["competence"])
            if self.competence is None:
                self.competence = loaded_competence
            else:
                self.competence.restore(loaded_competence)  # the selector holds this object
        random.setstate(payload["python_random"])
        torch.set_rng_state(payload["torch_rng"])
        extra = dict(payload.get("extra", {}))
        extra["checkpoint"] = loaded.path.name
        extra["checkpoint_skipped"] = loaded.skipped
        return extra
