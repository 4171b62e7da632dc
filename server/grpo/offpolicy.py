"""Late rewards in the GRPO update: a decoupled, truncated importance-sampling loss.

A candidate sampled by policy version ``v`` (its *behaviour* policy μ, log-probs recorded at
rollout) may get its reward only after the policy moved on: a straggling expert answered after
its round closed. When its group is complete enough it enters the update at version
``v + s`` (staleness ``s``). The loss is the decoupled PPO objective of AReaL (Fu et al. 2025,
"AReaL: a large-scale asynchronous RL system", eq. 5) with a truncated behaviour weight::

    per token:  w = min(π_prox / μ, is_cap)          (detached; 1 when s == 0)
                ρ = π_θ / π_prox                      (the PPO ratio, clipped as in GRPO)
                ℓ = −w · min(ρA, clip(ρ, 1−ε_low, 1+ε_high)·A) + β·k3(π_θ ‖ π_ref)

``π_prox`` is the policy at the start of this update (its log-probs computed with no grad
before the first inner iteration). For a fresh candidate (s = 0) π_prox = μ, so ``w`` is
exactly 1 and the loss *is* :func:`server.grpo.loss.grpo_loss` — bit for bit, gradients
included. Candidates staler than ``max_staleness`` policy versions are masked like a missing
reward; masked candidates and groups (``seq_mask`` False) behave exactly as in ``grpo_loss``.

``correction="none"`` is the naive asynchronous baseline: a late group is used as if it had
been sampled by π_prox (w = 1, ratio to π_prox), which is what an asynchronous trainer without
importance correction does (e.g. TRL's async GRPO today).

Where this departs from the references:

* **Stale rewards, not stale rollouts.** AReaL, prime-rl (``max_async_level``) and NeMo RL
  bound how old the *sampling* policy may be when rollouts are generated ahead of training.
  Here the rollout is on time and the *reward* is late; the group's candidates all come from
  one behaviour policy, so the group-relative advantage is still consistent within the group.
* **Staleness counts policy versions** (optimizer updates since sampling), not rounds or
  seconds; a round without an update (no signal) does not age the buffered groups.
* **Truncation** caps w at ``is_cap`` (truncated IS, as IMPALA's ρ̄ / "TIS"); AReaL leaves
  the behaviour weight uncapped by default (its ``behav_imp_weight_cap`` is optional), TRL's
  async GRPO has no behaviour weight at all.
* The KL term is not importance-weighted (it regularises π_θ on the sampled tokens, as TRL
  does with ``num_iterations`` > 1).
* Effective sample size is Kish's (Σw)² / (n·Σw²) over the active tokens of stale sequences,
  a fraction in (0, 1] (1 = no weight degeneracy; 1 when nothing is stale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedgrpo.errors import ConfigError
from fedgrpo.server.grpo.loss import MAX_LOG_RATIO, grpo_loss

__all__ = ["CORRECTIONS", "LateRewardConfig", "offpolicy_grpo_loss"]

CORRECTIONS = ("truncated_is", "none")


@dataclass(frozen=True)
class LateRewardConfig:
    """How late rewards enter the update (async rounds; the trainer's ``late`` argument).

    * ``max_staleness``: a group enters an update at most this many policy versions after the
      version that sampled it; later it is dropped (0 = never wait for a late reward);
    * ``correction``: ``truncated_is`` (decoupled loss, truncated behaviour weight) or
      ``none`` (late groups used as if on-policy);
    * ``is_cap``: the truncation constant of the behaviour weight (> 0);
    * ``min_coverage``: a group whose rewarded fraction of candidates reaches this at its
      round's close is used at once; below it, and with rewards still outstanding, it waits
      for them (up to ``max_staleness``);
    * ``min_update_groups``: FedBuff's buffer size K (Nguyen et al. 2022): the policy is
      updated only once at least this many groups are ready to train (fresh or late, each
      with >= 2 rewards); until then ready groups wait in the buffer, which does not age
      them (staleness counts updates). 1 = update whenever any group is ready.
    """

    max_staleness: int = 1
    correction: str = "truncated_is"
    is_cap: float = 2.0
    min_coverage: float = 1.0
    min_update_groups: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.max_staleness, bool) or not (
            isinstance(self.max_staleness, int) and self.max_staleness >= 0
        ):
            raise ConfigError(
                f"LateRewardConfig.max_staleness={self.max_staleness!r}; give an integer >= 0"
            )
        if self.correction not in CORRECTIONS:
            raise ConfigError(
                f"LateRewardConfig.correction={self.correction!r}; allowed: {', '.join(CORRECTIONS)}"
            )
        if not self.is_cap > 0:
            raise ConfigError(f"LateRewardConfig.is_cap={self.is_cap!r}; give a number > 0")
        k = self.min_update_groups
        if isinstance(k, bool) or not (isinstance(k, int) and k >= 1):
            raise ConfigError(
                f"LateRewardConfig.min_update_groups={k!r}; give an integer >= 1 (1 = no buffer)"
            )
        if not 0.0 < self.min_coverage <= 1.0:
            raise ConfigError(
                f"LateRewardConfig.min_coverage={self.min_coverage!r}; give a fraction in (0, 1]"
            )


def behaviour_weights(
    prox_logps: torch.Tensor,
    behaviour_logps: torch.Tensor,
    staleness: torch.Tensor,
    correction: str,
    is_cap: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(w [N, T] detached, truncated [N, T] bool): the per-token behaviour weight
    min(π_prox/μ, is_cap), exactly 1 on fresh rows (staleness 0) and with ``correction='none'``."""
    if correction not in CORRECTIONS:
        raise ConfigError(f"correction={correction!r}; allowed: {', '.join(CORRECTIONS)}")
    ones = torch.ones_like(prox_logps)
    if correction == "none":
        return ones, torch.zeros_like(prox_logps, dtype=torch.bool)
    d = (prox_logps.detach() - behaviour_logps.detach()).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    raw = torch.exp(d)
    stale = (staleness > 0)[:, None]
    truncated = stale & (raw > is_cap)
    w = torch.where(stale, raw.clamp(max=is_cap), ones)
    return w, truncated


def offpolicy_grpo_loss(
    logps: torch.Tensor,
    prox_logps: torch.Tensor,
    behaviour_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    seq_mask: torch.Tensor | None,
    staleness: torch.Tensor,
    *,
    max_staleness: int,
    correction: str = "truncated_is",
    is_cap: float = 2.0,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    loss_type: str = "grpo",
    max_completion_length: int | None = None,
    token_normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The decoupled truncated-IS GRPO loss (module docstring) and its metrics.

    Shapes as :func:`server.grpo.loss.grpo_loss`; ``prox_logps`` / ``behaviour_logps``
    [N, T], ``staleness`` [N] integer policy versions since each row was sampled. Metrics
    add ``stale_sequences``, ``too_stale_sequences``, ``is_weight_mean``, ``is_truncated``
    (fraction of stale active tokens whose weight was capped) and ``ess``."""
    _check_inputs(logps, prox_logps, behaviour_logps, advantages, staleness)
    base = torch.ones_like(advantages, dtype=torch.bool) if seq_mask is None else seq_mask.bool()
    too_stale = staleness > max_staleness
    keep = base & ~too_stale
    w, truncated = behaviour_weights(prox_logps, behaviour_logps, staleness, correction, is_cap)
    loss, metrics = grpo_loss(
        logps,
        prox_logps,
        ref_logps,
        advantages,
        completion_mask,
        keep,
        eps_low=eps_low,
        eps_high=eps_high,
        beta=beta,
        loss_type=loss_type,
        max_completion_length=max_completion_length,
        token_normalizer=token_normalizer,
        token_weights=w,
    )
    stale_rows = keep & (staleness > 0)
    stale_tokens = completion_mask.bool() & stale_rows[:, None]
    metrics.update(_weight_metrics(w, truncated, stale_tokens))
    metrics["stale_sequences"] = float(stale_rows.sum())
    metrics["too_stale_sequences"] = float((base & too_stale).sum())
    return loss, metrics


def _check_inputs(
    logps: torch.Tensor,
    prox_logps: torch.Tensor,
    behaviour_logps: torch.Tensor,
    advantages: torch.Tensor,
    staleness: torch.Tensor,
) -> None:
    if staleness.shape != advantages.shape:
        raise ConfigError(
            f"staleness has shape {tuple(staleness.shape)}; need [N] = {tuple(advantages.shape)}"
        )
    if prox_logps.shape != logps.shape or behaviour_logps.shape != logps.shape:
        raise ConfigError(
            f"prox_logps {tuple(prox_logps.shape)} / behaviour_logps "
            f"{tuple(behaviour_logps.shape)} must match logps {tuple(logps.shape)}"
        )
    if staleness.lt(0).any():
        raise ConfigError("staleness must be >= 0 (policy versions since sampling)")


def _weight_metrics(
    w: torch.Tensor, truncated: torch.Tensor, active: torch.Tensor
) -> dict[str, float]:
    n = int(active.sum())
    if n == 0:
        return {"is_weight_mean": 1.0, "is_truncated": 0.0, "ess": 1.0}
    ws = w[active].double()
    ess = float(ws.sum() ** 2 / (n * (ws**2).sum()))
    return {
        "is_weight_mean": float(ws.mean()),
        "is_truncated": float(truncated[active].double().mean()),
        "ess": ess,
    }
