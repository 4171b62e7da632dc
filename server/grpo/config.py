"""The GRPO update's settings (the runtime config the scenario's ``server.grpo`` maps onto)."""

from __future__ import annotations

from dataclasses import dataclass

from fedgrpo.errors import ConfigError

__all__ = ["GRPOConfig"]


@dataclass(frozen=True)
class GRPOConfig:
    group_size: int = 8
    questions_per_round: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 40
    lr: float = 1e-4
    eps_low: float = 0.2
    eps_high: float = 0.3
    beta: float = 0.0
    num_iterations: int = 1
    loss_type: str = "grpo"
    scale: str = "group"
    reward_combine: str = "mean"
    # fraction cut at each end by reward_combine="trimmed_mean"
    trim: float = 0.2
    grad_clip: float = 1.0
    # optimizer: "adamw" (weight_decay 0) or "sgd"; betas for AdamW, momentum for SGD
    optimizer: str = "adamw"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    sgd_momentum: float = 0.0
    # linear learning-rate warmup over the first ``warmup_rounds`` rounds (0 = none)
    warmup_rounds: int = 0
    # cosine decay of the learning rate to ``lr_final_fraction * lr`` at round ``lr_decay_rounds``
    # (0 = constant); use the run's number of rounds so the last updates are small
    lr_decay_rounds: int = 0
    lr_final_fraction: float = 0.0
    # multiplier on negative advantages (1 = GRPO; 0 = learn from better-than-average samples only)
    negative_advantage_scale: float = 1.0
    # Negative control: permute the combined rewards within each group before the update,
    # which keeps their distribution and destroys which candidate earned them. A run with
    # this on must not learn (tests/test_learning.py asserts that).
    shuffle_rewards: bool = False
    # Run each distinct prompt once and reuse its KV cache for the group's G candidates, in
    # generation and in every log-prob pass (server/prefix.py). Equal up to float rounding,
    # so off by default: results with it differ from those without in the last bits.
    share_prompt: bool = False
    # Leave zero-variance groups (every candidate the same reward: all right or all wrong)
    # out of the update: they carry no GRPO gradient (advantage 0) but still cost a forward
    # and backward pass and, under loss_type "grpo", count in the denominator, shrinking the
    # step of the groups that do vary. A round where no group varies then takes no optimizer
    # step at all (plain GRPO / TRL steps AdamW on a zero gradient, moving the weights by
    # its momentum). The dynamic-sampling filter of DAPO (Yu et al. 2025) without its
    # resampling. Off by default (TRL's behaviour); with beta > 0 the dropped groups' KL
    # term goes too.
    drop_zero_variance: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer={self.optimizer!r} is unknown; use adamw or sgd")
        if self.warmup_rounds < 0:
            raise ConfigError(f"warmup_rounds must be >= 0, got {self.warmup_rounds}")
        if self.group_size < 2:
            raise ConfigError(
                f"group_size must be >= 2 for group-relative advantages, got {self.group_size}"
            )
        if self.questions_per_round < 1:
            raise ConfigError(f"questions_per_round must be >= 1, got {self.questions_per_round}")
        if self.num_iterations < 1:
            raise ConfigError(f"num_iterations must be >= 1, got {self.num_iterations}")
