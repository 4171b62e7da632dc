"""Combine several experts' rewards per candidate; NaN means "this expert did not answer"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedgrpo.errors import ConfigError

METHODS = ("mean", "median", "trimmed_mean")


def reward_table(
    num_candidates: int, experts: Sequence[int], replies: Mapping[int, Mapping[int, float]]
) -> np.ndarray:
    """[num_candidates, len(experts)] table: ``replies[expert][candidate]`` or NaN if absent."""
    table = np.full((num_candidates, len(experts)), np.nan, dtype=np.float64)
    for j, expert in enumerate(experts):
        for cand, value in replies.get(expert, {}).items():
            if not 0 <= cand < num_candidates:
                raise ConfigError(
                    f"expert {expert} replied for candidate {cand}; allowed 0..{num_candidates - 1}"
                )
            table[cand, j] = float(value)
    return table


def _trim_count(n: int, trim: float) -> int:
    """Values cut at each end: floor(trim·n) (as scipy's trim_mean), always leaving ≥ 1."""
    return min(math.floor(trim * n), (n - 1) // 2)


def _trimmed_mean(row: np.ndarray, trim: float) -> float:
    vals = np.sort(row[~np.isnan(row)])
    k = _trim_count(len(vals), trim)
    return float(vals[k : len(vals) - k].mean())


def combine(
    rewards: np.ndarray,
    mask: np.ndarray | None = None,
    method: str = "mean",
    trim: float = 0.2,
) -> np.ndarray:
    """Per-candidate reward from a [C, E] expert table; NaN where no expert answered.

    ``mask`` (True = answered) may be given instead of / on top of NaN entries.
    ``trimmed_mean`` cuts floor(trim·n) values at each end of the n answers present (never
    all of them: 1-2 answers → plain mean, 3 answers with trim 0.34 → median).
    """
    if method not in METHODS:
        raise ConfigError(f"reward combine method {method!r} is unknown; allowed: {METHODS}")
    if not 0.0 <= trim < 0.5:
        raise ConfigError(f"trim={trim} is out of range; allowed 0 <= trim < 0.5")
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 2:
        raise ConfigError(f"rewards must be 2-D [candidates, experts]; got shape {r.shape}")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != r.shape:
            raise ConfigError(f"mask shape {m.shape} differs from rewards shape {r.shape}")
        r = np.where(m, r, np.nan)
    present = ~np.isnan(r)
    out = np.full(r.shape[0], np.nan, dtype=np.float64)
    rows = np.flatnonzero(present.any(axis=1))
    if rows.size == 0:
        return out
    if method == "mean":
        out[rows] = np.nanmean(r[rows], axis=1)
    elif method == "median":
        out[rows] = np.nanmedian(r[rows], axis=1)
    else:
        out[rows] = [_trimmed_mean(r[i], trim) for i in rows]
    return out


def split_missing(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values with NaN → 0, mask True where a value exists): the form the advantages take."""
    v = np.asarray(values, dtype=np.float64)
    mask = ~np.isnan(v)
    return np.where(mask, v, 0.0), mask


def shuffle_within_groups(combined: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each row (one question's G rewards) permuted independently: the reward-destroying control."""
    return np.stack([rng.permutation(row) for row in np.atleast_2d(combined)])


def signal_mask(combined: np.ndarray) -> np.ndarray:
    """[groups] True where a group's rewards vary: ≥ 2 rewarded candidates, not all equal.

    Only these carry a GRPO gradient; a group where every candidate got the same reward
    (all right, all wrong) has zero advantages and teaches nothing."""
    out = []
    for row in np.atleast_2d(combined):
        rewarded = row[~np.isnan(row)]
        out.append(rewarded.size >= 2 and float(rewarded.max()) > float(rewarded.min()))
    return np.asarray(out, dtype=bool)


def signal_groups(combined: np.ndarray) -> int:
    """How many groups carry a GRPO gradient (:func:`signal_mask`)."""
    return int(signal_mask(combined).sum())
