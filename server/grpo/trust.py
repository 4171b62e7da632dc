"""Reliability-weighted reward aggregation with the auxiliary set as the root of trust, and
the server-side debiasing of locally private rewards.

FLTrust (Cao et al., NDSS 2021) trusts a client update as far as it agrees with an update the
server computes on its own small root dataset. A reward-only server has no reference reward
for an unlabelled question, so trust is built from what it can check:

* **competence bits** (the root): each client's answers on the labelled auxiliary set are
  checked by the server (``selection.competence``). A client starts with the trust its
  verified auxiliary accuracy ``c_k`` warrants: ``s_k = 0.5 + 0.5 · c_k / max_j c_j``.
* **consensus**: in every round, each expert's rewards are compared, candidate by candidate,
  with the *leave-one-out* consensus of the other experts on the same question (their
  trust-weighted mean): agreement ``a = 1 − mean |r_e − consensus|``. Its running score is an
  exponential moving average ``s_k ← d · s_k + (1 − d) · a_k`` (``decay`` d), so one bad round
  does not exclude an honest client, and a consistent liar sinks within a few rounds.

Weight ``w_k = max(0, 2 s_k − 1)`` (agreement at chance, 0.5, is worth nothing; a client that
agrees less than chance, e.g. one that inverts its rewards, gets 0), relative to the most
trusted client; below ``exclude_below`` it is excluded. A candidate's reward is the
weighted mean of its trusted experts' rewards; with none trusted it has no reward (NaN:
masked out of the update, never a made-up value).

**probe** (the root, checked through the reward path itself): competence bits are the
client's own answers and an attacker answers them honestly (``edge/behaviour.py``). So when
competence is measured, the server also sends each client an ordinary score request built
from auxiliary items the client answered *correctly*: each item's reference solution and a
one-off slip of it (``tasks.numeric_slip``). An honest judge that knows the answer rewards
the reference above the slip; :func:`probe_agreement` is the fraction of pairs it orders
right (ties count half): ~1 for honest, 0 for inverted, 0.5 for random or always-approve.
The request looks like any other, so a device cannot answer it honestly and lie elsewhere
except by telling auxiliary questions apart (a colluder attacking one domain is left to the
consensus term). A client's trust is ``min(consensus score, probe score)``; a client whose
weight falls to 0 is also left out of expert selection (:func:`trusted_pool`), so the
question keeps M trusted experts instead of M − 1.

**calibration** (one-coin Dawid & Skene, 1979: a judge right less often than chance still
carries information, with the sign reversed): a client whose probe score is below
``flip_below`` has its rewards read as ``1 − r`` from then on, and its probe score as
``1 − p``. A systematic inverter thus becomes a good judge instead of a lost one -- which
matters when it is the only competent expert of its domain. A client that inverts only on
the probe (honest elsewhere) is then wrong after the flip, and the consensus term excludes it.

Guidance: with ``f`` Byzantine experts among the ``M`` scoring a question, the honest ones
keep a majority only when ``M ≥ 2f + 1`` (median and trimmed mean need it outright; the trust
weights need it to tell who agrees with whom). ``scenarios/checks`` warns when the
scenario's Byzantine fraction makes that unlikely.

Debiasing (:func:`fedgrpo.edge.privacy.debias`) is applied per expert before any combining
method, so mean, median, trimmed mean and trust all see unbiased estimates of the rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedgrpo.edge.privacy import PrivacySpec, debias
from fedgrpo.errors import ConfigError
from fedgrpo.server.grpo.rewards import combine

__all__ = [
    "RoundAggregator",
    "TrustConfig",
    "leave_one_out_agreement",
    "probe_agreement",
    "trust_weights",
    "trusted_pool",
]


@dataclass(frozen=True)
class TrustConfig:
    decay: float = 0.7
    exclude_below: float = 0.2
    flip_below: float = 0.2  # probe score below which a client's rewards are read as 1 - r

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_below < 0.5:
            raise ConfigError(f"trust flip_below={self.flip_below}; allowed [0, 0.5)")
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"trust decay={self.decay}; allowed 0 <= decay < 1")
        if not 0.0 <= self.exclude_below < 1.0:
            raise ConfigError(f"trust exclude_below={self.exclude_below}; allowed [0, 1)")


def leave_one_out_agreement(
    table: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For a [G, E] reward table (NaN = no answer) and per-expert ``weights`` [E]:
    (agreement [E] of each expert with the weighted mean of the others, candidates compared
    [E]). Values are clipped to [0, 1] for the comparison; an expert alone has count 0."""
    r = np.clip(np.asarray(table, dtype=np.float64), 0.0, 1.0)
    present = ~np.isnan(r)
    w = np.where(present, np.maximum(np.asarray(weights, dtype=np.float64), 1e-6), 0.0)
    rv = np.where(present, r, 0.0)
    tot_w = w.sum(axis=1, keepdims=True)
    tot_wr = (w * rv).sum(axis=1, keepdims=True)
    others_w = tot_w - w  # [G, E]
    with np.errstate(invalid="ignore", divide="ignore"):
        consensus = (tot_wr - w * rv) / others_w
    usable = present & (others_w > 1e-12)
    diff = np.where(usable, np.abs(rv - np.nan_to_num(consensus)), 0.0)
    count = usable.sum(axis=0)
    agree = np.where(count > 0, 1.0 - diff.sum(axis=0) / np.maximum(count, 1), np.nan)
    return agree, count


def probe_agreement(rewards: Sequence[float]) -> float:
    """Probe score from ``[r(reference_1), r(slip_1), r(reference_2), r(slip_2), ...]``: the
    fraction of pairs with the reference rewarded above its slip (ties half; pairs with a
    non-finite reward skipped). NaN when no pair is usable."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size % 2:
        raise ValueError(f"probe rewards come in (reference, slip) pairs; got {r.size} values")
    ref, slip = r[0::2], r[1::2]
    ok = np.isfinite(ref) & np.isfinite(slip)
    if not ok.any():
        return float("nan")
    wins = (ref[ok] > slip[ok]).astype(np.float64) + 0.5 * (ref[ok] == slip[ok])
    return float(wins.mean())


def trusted_pool(available: Sequence[int] | None, weights: np.ndarray) -> Sequence[int] | None:
    """The clients selection may pick: ``available`` (None = all) without those of trust
    weight 0; unchanged when nobody is excluded or when that would leave no one."""
    w = np.asarray(weights)
    if not (w == 0).any():
        return available
    pool = range(len(w)) if available is None else available
    kept = [k for k in pool if k >= len(w) or w[k] > 0]
    return kept if kept else available


def trust_weights(scores: np.ndarray, exclude_below: float) -> np.ndarray:
    """Weights in [0, 1] from trust scores: ``max(0, 2s − 1)`` relative to the largest, 0
    below ``exclude_below``."""
    raw = np.maximum(0.0, 2.0 * np.asarray(scores, dtype=np.float64) - 1.0)
    top = float(raw.max()) if raw.size else 0.0
    if top <= 0:
        return np.zeros_like(raw)
    rel = raw / top
    return np.where(rel < exclude_below, 0.0, rel)


class RoundAggregator:
    """One reward per candidate from a round's [B, G, E] expert rewards (the trainer's
    ``_combine`` hook): debias private rewards per client, then ``method`` (mean, median,
    trimmed_mean or trust). Keeps the trust scores across rounds."""

    def __init__(
        self,
        method: str,
        num_clients: int,
        trim: float = 0.2,
        privacy: Sequence[PrivacySpec] | None = None,
        config: TrustConfig | None = None,
        competence: Callable[[], Any] | None = None,
    ) -> None:
        self.method, self.trim, self.num_clients = method, trim, num_clients
        self.privacy = list(privacy) if privacy is not None else [PrivacySpec()] * num_clients
        if len(self.privacy) != num_clients:
            raise ConfigError(f"{len(self.privacy)} privacy specs for {num_clients} clients")
        self.config = config or TrustConfig()
        self.competence = competence
        self.scores: np.ndarray | None = None  # consensus EMA (None until the first round)
        self.probe = np.full(num_clients, np.nan)  # probe scores (NaN = never probed)
        self.flipped = np.zeros(num_clients, dtype=bool)  # rewards read as 1 - r
        self.last_weights = np.ones(num_clients)

    # ------------------------------------------------------------------ trust state
    def _prior(self) -> np.ndarray:
        comp = self.competence() if self.competence is not None else None
        values = getattr(comp, "values", comp)
        if values is None or np.size(values) == 0:
            return np.full(self.num_clients, 0.75)
        acc = np.nanmean(np.asarray(values, dtype=np.float64), axis=1)
        acc = np.where(np.isnan(acc), np.nanmean(acc) if np.isfinite(acc).any() else 0.5, acc)
        top = float(acc.max())
        return 0.5 + 0.5 * (acc / top if top > 0 else np.ones_like(acc))

    def _debias(self, rewards: np.ndarray, experts: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.array(rewards, dtype=np.float64, copy=True)
        for b, ranked in enumerate(experts):
            for e, k in enumerate(ranked[: out.shape[2]]):
                out[b, :, e] = debias(out[b, :, e], self.privacy[k])
                if self.flipped[k]:  # calibrated against the probe (trust only)
                    out[b, :, e] = 1.0 - out[b, :, e]
        return out

    def set_probe(self, scores: dict[int, float]) -> None:
        """Record clients' probe scores (:func:`probe_agreement`); NaN leaves one unchanged."""
        for k, v in scores.items():
            if not np.isfinite(v):
                continue
            self.flipped[k] = v < self.config.flip_below
            self.probe[k] = 1.0 - float(v) if self.flipped[k] else float(v)
        self.last_weights = self._weights()

    def _weights(self) -> np.ndarray:
        if self.method != "trust":
            return np.ones(self.num_clients)
        base = self.scores if self.scores is not None else self._prior()
        return trust_weights(np.fmin(base, self.probe), self.config.exclude_below)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run weights rewards exactly as before."""
        return {
            "scores": None if self.scores is None else self.scores.tolist(),
            "probe": self.probe.tolist(),
            "flipped": self.flipped.tolist(),
            "last_weights": self.last_weights.tolist(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        scores = state.get("scores")
        self.scores = None if scores is None else np.asarray(scores, dtype=np.float64)
        self.probe = np.asarray(state["probe"], dtype=np.float64)
        self.flipped = np.asarray(state["flipped"], dtype=bool)
        self.last_weights = np.asarray(state["last_weights"], dtype=np.float64)
        if len(self.probe) != self.num_clients:
            raise ConfigError(
                f"checkpointed trust state has {len(self.probe)} clients; this run has "
                f"{self.num_clients}: resume with the same scenario"
            )

    # ------------------------------------------------------------------ one round
    def __call__(
        self, rewards: np.ndarray, experts: Sequence[Sequence[int]], update: bool = True
    ) -> np.ndarray:
        """[B, G] combined rewards; ``update=False`` weights by the current trust without
        moving it (a held group's late rewards, already judged once)."""
        r = self._debias(np.asarray(rewards, dtype=np.float64), experts)
        if self.method != "trust":
            return np.stack(
                [combine(r[b], method=self.method, trim=self.trim) for b in range(len(r))]
            )
        if self.scores is None:
            self.scores = self._prior()
        weights = self._weights()
        combined = np.full(r.shape[:2], np.nan)
        agree_sum = np.zeros(self.num_clients)
        agree_n = np.zeros(self.num_clients)
        for b, ranked in enumerate(experts):
            ids = np.asarray(list(ranked[: r.shape[2]]), dtype=np.int64)
            table = r[b][:, : len(ids)]
            combined[b] = _weighted(table, weights[ids])
            agree, count = leave_one_out_agreement(table, np.maximum(weights[ids], 1e-3))
            ok = count > 0
            np.add.at(agree_sum, ids[ok], agree[ok] * count[ok])
            np.add.at(agree_n, ids[ok], count[ok])
        seen = (agree_n > 0) & update
        d = self.config.decay
        self.scores[seen] = d * self.scores[seen] + (1 - d) * (agree_sum[seen] / agree_n[seen])
        self.last_weights = self._weights()
        return combined

    def record(self) -> dict[str, Any]:
        """What the round record shows (trust method only)."""
        if self.method != "trust" or self.scores is None:
            return {}
        out: dict[str, Any] = {
            "trust_weights": [round(float(w), 4) for w in self.last_weights],
            "trust_excluded": int((self.last_weights == 0).sum()),
        }
        if self.flipped.any():
            out["trust_flipped"] = [int(k) for k in np.flatnonzero(self.flipped)]
        if np.isfinite(self.probe).any():
            out["trust_probe"] = [None if np.isnan(v) else round(float(v), 4) for v in self.probe]
        return out


def _weighted(table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[G] weighted mean of each row's present values (NaN where no weight is present)."""
    present = ~np.isnan(table)
    w = np.where(present, weights[None, :], 0.0)
    tot = w.sum(axis=1)
    num = (w * np.where(present, table, 0.0)).sum(axis=1)
    out = np.full(table.shape[0], np.nan)
    ok = tot > 0
    out[ok] = num[ok] / tot[ok]
    return out
