"""The FedGRPO round loop: sample questions, roll out, select experts, gather rewards, update.

Everything random is derived from ``(seed, round)``, so a run resumed from a checkpoint at
round r draws exactly what the uninterrupted run drew from round r on; the checkpoint holds
the model, the optimizer, the round counter and the competence matrix.

Where this departs from the paper's description (see also ``server.grpo``):
missing rewards are masked rather than zeroed, and the auxiliary-set embeddings come from
the *initial* (frozen) server model so they never drift during training.

Checkpoint writing and restoring live in :mod:`server.trainer_state`.

Async rounds (``late``): incomplete groups wait for their late rewards in
:mod:`server.late_groups` and enter a later update through :mod:`server.grpo.offpolicy`.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from fedgrpo.server.grpo.offpolicy import LateRewardConfig, offpolicy_grpo_loss
from fedgrpo.server.grpo.rewards import shuffle_within_groups, signal_groups
from fedgrpo.server.grpo.trust import trusted_pool
from fedgrpo.server.late_groups import (
    LateGroups,
    MergedBatch,
    fresh_group,
    late_record,
    merge_rows,
)
from fedgrpo.server.rollout import RolloutBatch, completion_logps, rollout, signal_only
from fedgrpo.server.schedule import lr_factor, make_optimizer, round_rngs, sample_accuracy
from fedgrpo.server.tasks import TaskItem, TaskSuite
from fedgrpo.server.zoo.evaluate import EvalResult, evaluate_on_suite

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

BASELINES = ("fedgrpo", "central_grpo", "zero_shot")


@dataclass
class TrainerState:
    round: int = 0
    version: int = 0  # policy versions: optimizer updates so far (staleness is counted in them)
    history: list[dict[str, Any]] = field(default_factory=list)


def _relative(row: np.ndarray) -> bool:
    """A group's combined rewards [G] hold >= 2 values: something to be relative to."""
    return int((~np.isnan(row)).sum()) >= 2


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
        late: LateRewardConfig | None = None,
    ) -> None:
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
        self.optimizer: torch.optim.Optimizer = make_optimizer(model, config)
        self.reference = copy.deepcopy(model).eval() if config.beta > 0 else None
        if self.reference is not None:
            for p in self.reference.parameters():
                p.requires_grad_(False)
        self.state = TrainerState()
        self.competence: CompetenceMatrix | None = None
        # async rounds: groups waiting for late rewards (None: late rewards are not used)
        self.late_groups = LateGroups(late) if late is not None else None
        # optional (rewards [B,G,E], experts) -> [B,G]: debiasing and trust (server/grpo/trust.py)
        self.aggregator: Any = None

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
            share_prompt=cfg.share_prompt,
        )
        experts = self._select(items, npg)
        result = self._gather(r, items, batch, experts, npg)
        fresh = self._combine(result, len(items), r, experts)
        rewarded = ~np.isnan(fresh)
        late_fields: dict[str, Any] = {}
        combined, merged = fresh, None
        if self.late_groups is not None:
            combined, merged, late_fields = self._late(r, batch, result, fresh, experts)
        update = self._update(merged or batch, combined, merged is not None)
        record: dict[str, Any] = {
            "event": "round",
            "round": r,
            **flat(result.stats),
            "coverage": float(rewarded.mean()) if rewarded.size else 0.0,
            "groups": len(items),
            "groups_with_signal": int(update.pop("groups_with_signal")),
            "reward_mean": float(np.nanmean(fresh)) if rewarded.any() else None,
            "true_accuracy_of_samples": sample_accuracy(
                batch.completions, items, cfg.group_size, self.suite.task.is_correct
            ),
            "experts": experts,
            "compute_s": round(time.perf_counter() - start, 3),
            **late_fields,
            **update,
            **(self.aggregator.record() if self.aggregator is not None else {}),
        }
        self.state.round += 1
        self.state.version += int(bool(update["updated"]))
        self.state.history.append(record)
        return record

    def _select(self, items: list[TaskItem], rng: np.random.Generator) -> list[list[int]]:
        if self.baseline != "fedgrpo" or self.selector is None:
            return [[] for _ in items]
        embeddings = self.embed([i.question for i in items]) if self.embed is not None else None
        available = self.available_clients(self.state.round) if self.available_clients else None
        idle = getattr(self.gatherer, "idle_clients", None)
        if self.late_groups is not None and idle is not None:
            available = idle(available)  # stragglers' devices are not asked again (issue 14)
        if self.aggregator is not None:  # distrusted experts are not asked (grpo/trust.py)
            available = trusted_pool(available, self.aggregator.last_weights)
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

    def _combine(
        self,
        result: GatherResult,
        groups: int,
        r: int,
        experts: Sequence[Sequence[int]] | None = None,
        late: bool = False,
    ) -> np.ndarray:
        """[groups, G] one reward per candidate from the experts' answers (NaN = none);
        shuffled within each group for the negative control. ``late``: a held group's late
        rewards (weighted by today's trust, which they do not update a second time)."""
        cfg = self.config
        if self.aggregator is not None and experts:
            combined = self.aggregator(result.rewards, experts, update=not late)
        else:
            combined = np.stack(
                [
                    combine(result.rewards[b], method=cfg.reward_combine, trim=cfg.trim)
                    for b in range(groups)
                ]
            )
        if cfg.shuffle_rewards:
            combined = shuffle_within_groups(combined, np.random.default_rng([self.seed, r, 3]))
        return combined

    def _late(
        self,
        r: int,
        batch: RolloutBatch,
        result: GatherResult,
        combined: np.ndarray,
        experts: list[list[int]],
    ) -> tuple[np.ndarray, MergedBatch | None, dict[str, Any]]:
        """Async rounds: hold this round's incomplete groups, fill held groups with the late
        rewards, and add the due ones (with signal) to the update; (combined rewards of the
        update's groups, their merged batch or None if only fresh groups, record fields)."""
        lg, v = self.late_groups, self.state.version
        assert lg is not None
        lg.deliver(result.late)
        held = lg.split(r, v, batch, result.rewards, result.outstanding, experts)
        combined = np.where(held[:, None], np.nan, combined)
        rows, used, dropped, ready = [combined], [], 0, []
        parts: list[tuple[RolloutBatch, Sequence[int], int]] = [(batch, range(len(combined)), 0)]
        for g in lg.take(v, r):
            slots = [list(g.experts)] if g.experts else None
            c = self._combine(GatherResult(g.rewards[None]), 1, g.round_index, slots, late=True)
            if not _relative(c[0]):  # no group to be relative to: dropped
                dropped += 1
                continue
            rows.append(c)
            parts.append((g.batch, [g.question], v - g.version))
            used.append(v - g.version)
            ready.append(g)
        fresh = [b for b in range(len(combined)) if _relative(combined[b])]
        n, k = len(fresh) + len(used), lg.config.min_update_groups
        if k > 1 and n < k:  # FedBuff's buffer: wait for K ready groups
            lg.keep(ready + [fresh_group(r, v, b, result.rewards[b], batch, experts[b])
                             for b in fresh])  # fmt: skip
            fields = late_record(int(held.sum()), [], dropped, *lg.counters(), lg.buffered())
            return np.full_like(combined, np.nan), None, fields
        fields = late_record(int(held.sum()), used, dropped, *lg.counters(), lg.buffered(), n)
        if not used:
            return combined, None, fields
        merged = merge_rows(parts, self.tokenizer.pad_token_id)
        return np.concatenate(rows), merged, fields

    def _update(self, batch: Any, combined: np.ndarray, stale: bool = False) -> dict[str, Any]:
        import torch

        cfg = self.config
        groups_with_signal = signal_groups(combined)
        if cfg.drop_zero_variance:  # flat groups leave the update (grpo/config.py)
            batch, combined = signal_only(batch, combined)
        mask = ~np.isnan(combined)
        adv, effective = group_advantages(np.nan_to_num(combined), mask, scale=cfg.scale)
        device = batch.old_logps.device  # the policy's device (server/device.py)
        adv_t = torch.as_tensor(np.asarray(adv), dtype=torch.float32, device=device).reshape(-1)
        if cfg.negative_advantage_scale != 1.0:
            adv_t = torch.where(adv_t < 0, adv_t * cfg.negative_advantage_scale, adv_t)
        seq_mask = torch.as_tensor(np.asarray(effective), dtype=torch.bool, device=device)
        seq_mask = seq_mask.reshape(-1)
        out: dict[str, Any] = {
            "groups_with_signal": groups_with_signal,
            "loss": None,
            "updated": False,
        }
        no_signal = cfg.drop_zero_variance and groups_with_signal == 0
        if self.baseline == "zero_shot" or no_signal or not bool(seq_mask.any()):
            return out
        ref = self._reference_logps(batch)
        prox = self._proximal_logps(batch) if stale else None
        if cfg.warmup_rounds > 0 or cfg.lr_decay_rounds > 0:
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.lr * self.lr_factor(self.state.round)
        losses: list[float] = []
        norms: list[float] = []
        for _ in range(cfg.num_iterations):
            loss, grad_norm, metrics = self._optimise(batch, ref, adv_t, seq_mask, prox)
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
                share_prompt=cfg.share_prompt,
            )

    def _proximal_logps(self, batch: MergedBatch) -> torch.Tensor:
        """π_prox of the decoupled loss: the policy before this update (the behaviour
        log-probs on fresh rows, where the two are the same policy)."""
        import torch

        with torch.no_grad():
            now = completion_logps(
                self.model, batch.input_ids, batch.attention_mask, batch.completion_length,
                self.config.temperature, share_prompt=self.config.share_prompt,
            )  # fmt: skip
        return torch.where((batch.staleness == 0)[:, None], batch.old_logps, now)

    def _optimise(
        self,
        batch: Any,
        ref: torch.Tensor | None,
        adv_t: torch.Tensor,
        seq_mask: torch.Tensor,
        prox: torch.Tensor | None = None,
    ) -> tuple[float, float, dict[str, float]]:
        """One optimizer step on the GRPO loss (the off-policy one when ``prox`` is given
        for a batch with late groups): (loss, gradient norm before clipping, its metrics)."""
        import torch

        cfg = self.config
        logps = completion_logps(
            self.model,
            batch.input_ids,
            batch.attention_mask,
            batch.completion_length,
            cfg.temperature,
            share_prompt=cfg.share_prompt,
        )
        common: dict[str, Any] = dict(
            eps_low=cfg.eps_low,
            eps_high=cfg.eps_high,
            beta=cfg.beta,
            loss_type=cfg.loss_type,
            max_completion_length=cfg.max_new_tokens,
        )
        if prox is None:
            loss, metrics = grpo_loss(
                logps, batch.old_logps, ref, adv_t, batch.completion_mask, seq_mask, **common
            )
        else:
            late = self.late_groups.config if self.late_groups is not None else LateRewardConfig()
            loss, metrics = offpolicy_grpo_loss(
                logps, prox, batch.old_logps, ref, adv_t, batch.completion_mask, seq_mask,
                batch.staleness, max_staleness=late.max_staleness, correction=late.correction,
                is_cap=late.is_cap, **common,
            )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        self.optimizer.step()
        return float(loss.item()), grad_norm, metrics

    def lr_factor(self, round_index: int) -> float:
        """Learning-rate multiplier at ``round_index`` (:func:`server.schedule.lr_factor`)."""
        return lr_factor(self.config, round_index)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, per_domain: int | None = None) -> EvalResult:
        return evaluate_on_suite(self.model, self.tokenizer, self.suite, per_domain)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory: Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``directory/round-XXXXX.pt`` atomically with its checksum (server.checkpoint)."""
        from fedgrpo.server.trainer_state import save_trainer

        return save_trainer(self, directory, extra or {})

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        """Restore from the newest good checkpoint in ``directory``; returns its ``extra``.

        A damaged newest file falls back to an older good one (logged, naming both); none
        good raises :class:`server.checkpoint.CheckpointError`."""
        from fedgrpo.server.trainer_state import load_trainer

        return load_trainer(self, directory)
