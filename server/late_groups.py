"""Groups waiting for late rewards (async rounds), and the mixed batch they are trained in.

At a round's close (:meth:`LateGroups.split`) a question's group whose rewarded fraction is
below ``min_coverage`` while some of its rewards are still outstanding is *held*: its
candidates, their behaviour log-probs and the policy version that sampled them stay here.
Late rewards (:class:`~fedgrpo.server.gathering.base.LateReward`) fill it in
(:meth:`LateGroups.deliver`). At each update (:meth:`LateGroups.take`) a held group is
released once it is complete enough (nothing outstanding, or ``min_coverage`` reached), or
at the latest when it is ``max_staleness`` policy versions (or rounds) old, with what it
has; it is then trained through :func:`fedgrpo.server.grpo.offpolicy.offpolicy_grpo_loss`
in a batch merged with the round's fresh groups (:func:`merge_rows`).

The per-round record of this (``late_record``) has the keys
``groups_held`` (fresh groups held back this round), ``stale_groups_used`` (released groups
with signal that entered this update), ``stale_groups_dropped`` (released without signal, or
too stale), ``staleness_hist`` (policy versions → used groups), ``late_rewards`` (late rewards
delivered this round), ``late_rewards_unused`` (their group was no longer held),
``groups_buffered`` (ready groups waiting for K, below) and ``groups_trained`` (ready groups,
fresh and late, handed to this round's update).

FedBuff's buffer (``min_update_groups`` = K > 1): an update happens only once K groups are
ready (this round's complete groups plus the released late ones); until then they all go
(back) into the buffer (:meth:`LateGroups.keep`, :func:`fresh_group`) and the round makes no
update. Without it every round with one ready group steps the optimiser, so an asynchronous
run whose short rounds each complete a few groups makes many more optimizer steps than a
synchronous run over the same groups, each on a smaller, noisier batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fedgrpo.server.gathering.base import LateReward
from fedgrpo.server.grpo.offpolicy import LateRewardConfig

if TYPE_CHECKING:
    import torch

    from fedgrpo.server.rollout import RolloutBatch

__all__ = ["HeldGroup", "LateGroups", "MergedBatch", "fresh_group", "merge_rows"]


@dataclass
class HeldGroup:
    """One question's group waiting for late rewards."""

    round_index: int
    version: int  # the policy version that sampled its candidates
    question: int  # its index in its round's batch
    rewards: np.ndarray  # [G, E], NaN = none (yet)
    outstanding: np.ndarray  # [G, E] True = a reward may still arrive
    batch: RolloutBatch
    # client of each expert slot, so the late group is debiased and trust-weighted like a
    # fresh one (a class default: groups pickled by older checkpoints have none)
    experts: tuple[int, ...] = ()

    def coverage(self) -> float:
        return float((~np.isnan(self.rewards)).any(axis=1).mean())


class LateGroups:
    """The buffer of held groups (see the module docstring)."""

    def __init__(self, config: LateRewardConfig) -> None:
        self.config = config
        self.held: dict[tuple[int, int], HeldGroup] = {}
        self.delivered = 0
        self.unused = 0

    def split(
        self,
        round_index: int,
        version: int,
        batch: RolloutBatch,
        rewards: np.ndarray,
        outstanding: np.ndarray | None,
        experts: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """Hold the round's incomplete groups (with ``experts[b]``, the clients of group b's
        expert slots); returns [B] True for the groups held."""
        held = np.zeros(rewards.shape[0], dtype=bool)
        if outstanding is None or self.config.max_staleness == 0:
            return held
        for b in range(rewards.shape[0]):
            slots = tuple(int(k) for k in experts[b]) if experts is not None else ()
            group = HeldGroup(
                round_index, version, b, rewards[b].copy(), outstanding[b].copy(), batch, slots
            )
            if group.outstanding.any() and group.coverage() < self.config.min_coverage:
                self.held[(round_index, b)] = group
                held[b] = True
        return held

    def deliver(self, late: Sequence[LateReward]) -> None:
        """Fill held groups with late rewards (a reward for a group no longer held is unused)."""
        for x in late:
            group = self.held.get((x.round_index, x.question))
            if group is None or not 0 <= x.slot < group.rewards.shape[1]:
                self.unused += 1
                continue
            group.rewards[x.candidate, x.slot] = x.value
            group.outstanding[x.candidate, x.slot] = False
            self.delivered += 1

    def take(self, version: int, round_index: int) -> list[HeldGroup]:
        """The held groups due at this update (complete enough, or at the staleness bound),
        removed from the buffer, oldest first."""
        cfg = self.config
        due = []
        for key, g in sorted(self.held.items()):
            age = max(version - g.version, round_index - g.round_index)
            complete = not g.outstanding.any() or g.coverage() >= cfg.min_coverage
            if complete or age >= cfg.max_staleness:
                due.append(g)
                del self.held[key]
        return due

    def keep(self, groups: Sequence[HeldGroup]) -> None:
        """Put ready groups (back) in the buffer: too few for an update yet
        (``min_update_groups``); they are due again at the next :meth:`take`."""
        for g in groups:
            self.held[(g.round_index, g.question)] = g

    def buffered(self) -> int:
        """Groups in the buffer with nothing outstanding (ready, waiting for an update)."""
        return sum(1 for g in self.held.values() if not g.outstanding.any())

    def counters(self) -> tuple[int, int]:
        """(late rewards delivered, unused) since the previous call."""
        out = (self.delivered, self.unused)
        self.delivered = self.unused = 0
        return out


def fresh_group(
    round_index: int,
    version: int,
    question: int,
    rewards: np.ndarray,
    batch: RolloutBatch,
    experts: Sequence[int] = (),
) -> HeldGroup:
    """A fresh group that is ready (nothing outstanding) as a buffer entry, to wait for an
    update with ``min_update_groups`` (its staleness grows only if an update happens first)."""
    r = rewards.copy()
    slots = tuple(int(k) for k in experts)
    return HeldGroup(round_index, version, question, r, np.zeros(r.shape, bool), batch, slots)


def late_record(
    held_now: int,
    used: Sequence[int],
    dropped: int,
    delivered: int,
    unused: int,
    buffered: int = 0,
    trained: int = 0,
) -> dict[str, Any]:
    """The round record's late-reward fields (module docstring); ``used``: the staleness
    in policy versions of each stale group that entered the update; ``buffered``: ready
    groups waiting in the buffer for ``min_update_groups`` after this round; ``trained``:
    ready groups (fresh and late) handed to this round's update (0: no update)."""
    hist: dict[str, int] = {}
    for s in sorted(used):
        hist[str(s)] = hist.get(str(s), 0) + 1
    return {
        "groups_held": int(held_now),
        "groups_buffered": int(buffered),
        "groups_trained": int(trained),
        "stale_groups_used": len(used),
        "stale_groups_dropped": int(dropped),
        "staleness_hist": hist,
        "late_rewards": int(delivered),
        "late_rewards_unused": int(unused),
    }


@dataclass
class MergedBatch:
    """Rows of several rounds' batches re-padded to one layout (as :class:`RolloutBatch`:
    left-padded prompts, right-padded completions), with each row's staleness."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    old_logps: torch.Tensor  # the behaviour policy's log-probs
    staleness: torch.Tensor  # [N] policy versions

    @property
    def completion_length(self) -> int:
        return int(self.completion_mask.shape[1])


def merge_rows(
    parts: Sequence[tuple[RolloutBatch, Sequence[int], int]], pad_id: int
) -> MergedBatch:
    """``parts``: (batch, its questions to take, their staleness); rows question-major."""
    import torch
    import torch.nn.functional as F

    widths = [
        (b.input_ids.shape[1] - b.completion_length, b.completion_length) for b, _, _ in parts
    ]
    p_max = max(p for p, _ in widths)
    c_max = max(c for _, c in widths)
    ids, attn, cmask, logps, stale = [], [], [], [], []
    for (batch, questions, s), (p, c) in zip(parts, widths):
        g = batch.group_size
        rows = torch.tensor([q * g + j for q in questions for j in range(g)], dtype=torch.long)
        x, a = batch.input_ids[rows], batch.attention_mask[rows]
        lp, rp = p_max - p, c_max - c
        ids.append(
            torch.cat(
                [F.pad(x[:, :p], (lp, 0), value=pad_id), F.pad(x[:, p:], (0, rp), value=pad_id)], 1
            )
        )
        attn.append(torch.cat([F.pad(a[:, :p], (lp, 0)), F.pad(a[:, p:], (0, rp))], 1))
        cmask.append(F.pad(batch.completion_mask[rows], (0, rp)))
        logps.append(F.pad(batch.old_logps[rows], (0, rp)))
        stale.append(torch.full((len(rows),), s, dtype=torch.long))
    return MergedBatch(
        torch.cat(ids), torch.cat(attn), torch.cat(cmask), torch.cat(logps), torch.cat(stale)
    )
