"""Federated group-relative update: pure math on tensors/arrays, no model objects.

Modules:
    config      GRPOConfig: the update's settings (what the scenario's server.grpo maps onto)
    rewards     combine several experts' scalar rewards per candidate (mean/median/trimmed)
    advantages  masked group-relative advantages (scale: group | batch | none)
    loss        token-level clipped GRPO loss with k3 KL, TRL-compatible aggregations

Where our GRPO departs from the paper (Shao et al. 2024) and the official FedGRPO code:

* **Missing rewards are masked, not zeroed.** A candidate whose experts never answered
  (timeout, dropout, crash) is left out of its group's mean/std and gets zero weight in the
  loss, denominators included. The official code writes a 0 reward, which drags the group
  mean down and hands every answered candidate a spurious positive advantage.
* **Groups with fewer than 2 rewarded candidates contribute nothing** (advantage 0, mask
  False): one reward has no group to be relative to.
* Zero-variance groups get advantage exactly 0 (TRL gets ~0 by dividing by std + 1e-4); they
  stay in the loss so that, as in TRL, they carry the KL term and count in the denominators.
* With no missing reward the numbers equal TRL ``GRPOTrainer``'s: unbiased std
  (``torch.std``), ε = 1e-4 added to the std, the same loss aggregations (``loss_type``)
  and clip metrics. Deviation: ``dapo`` divides by the active tokens of *this* call unless a
  global ``token_normalizer`` is passed (TRL uses the active tokens of the whole generation
  batch over all processes / accumulation steps). ``dr_grpo`` divides by the number of
  *effective* sequences × ``max_completion_length``.
* Log-ratios are clamped to ±20 before ``exp`` (far outside any clip band) so that extreme
  or padded inputs never produce inf/NaN.
"""

from fedgrpo.server.grpo.advantages import SCALES, group_advantages
from fedgrpo.server.grpo.config import GRPOConfig
from fedgrpo.server.grpo.loss import LOSS_TYPES, grpo_loss, k3_kl, per_token_logps, target_logps
from fedgrpo.server.grpo.rewards import (
    METHODS,
    combine,
    reward_table,
    shuffle_within_groups,
    signal_groups,
    signal_mask,
    split_missing,
)

__all__ = [
    "LOSS_TYPES",
    "METHODS",
    "SCALES",
    "GRPOConfig",
    "combine",
    "group_advantages",
    "grpo_loss",
    "k3_kl",
    "per_token_logps",
    "reward_table",
    "shuffle_within_groups",
    "signal_groups",
    "signal_mask",
    "split_missing",
    "target_logps",
]
