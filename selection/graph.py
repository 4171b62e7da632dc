"""The confidence graph: nearest auxiliary exemplars, competence scores, seeded top-M."""

from __future__ import annotations

import numpy as np

from fedgrpo.errors import ConfigError

TIE_DECIMALS = 12  # scores equal to 12 decimals are ties (float sums of bits can differ by ulp)


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def cosine_neighbours(query_emb: np.ndarray, aux_emb: np.ndarray, L: int) -> np.ndarray:
    """Indices [Q, min(L, N)] of the most cosine-similar auxiliary exemplars, most similar first.

    Inputs are (re-)normalised with :func:`l2_normalise`; equal similarities keep index order.
    """
    if L <= 0:
        raise ConfigError(f"L={L} neighbours; allowed L >= 1 (the paper uses L=20)")
    q, a = np.atleast_2d(query_emb), np.atleast_2d(aux_emb)
    if q.shape[1] != a.shape[1]:
        raise ConfigError(f"embedding sizes differ: questions {q.shape[1]}, auxiliary {a.shape[1]}")
    sims = l2_normalise(q) @ l2_normalise(a).T
    order = np.argsort(-sims, axis=1, kind="stable")
    return order[:, : min(L, a.shape[0])]


def competence_scores(
    competence: np.ndarray, neighbours: np.ndarray, prior: float = 0.5
) -> np.ndarray:
    """Scores [Q, K]: each client's mean correctness on each question's neighbours.

    ``competence`` [K, N] holds NaN where unknown; unknown entries count as ``prior`` so a
    client never measured still gets picked when the measured ones are worse than the prior.
    """
    if not 0.0 <= prior <= 1.0:
        raise ConfigError(f"prior={prior}; allowed 0 <= prior <= 1")
    c = np.asarray(competence, dtype=np.float64)
    c = np.where(np.isnan(c), prior, c)
    return c[:, np.asarray(neighbours)].mean(axis=-1).T


def top_m(
    scores: np.ndarray,
    M: int,
    rng: np.random.Generator,
    available_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Indices [Q, min(M, available)] of the best clients per question, best first.

    Ties are broken uniformly at random by ``rng`` (never by index). Unavailable clients are
    never picked; if fewer than M are available, all available are returned (possibly none:
    shape [Q, 0]) — the caller decides whether a question with too few experts is skipped.
    """
    if M <= 0:
        raise ConfigError(f"M={M} experts per question; allowed M >= 1 (the paper uses M=2)")
    s = np.round(np.atleast_2d(np.asarray(scores, dtype=np.float64)), TIE_DECIMALS)
    k = s.shape[1]
    avail = np.ones(k, dtype=bool) if available_mask is None else np.asarray(available_mask, bool)
    if avail.shape != (k,):
        raise ConfigError(f"available_mask has shape {avail.shape}; need ({k},)")
    keys = rng.random(s.shape)
    unavailable = np.broadcast_to(~avail, s.shape)
    # last key is primary: available first, then score descending, then the random key
    order = np.lexsort((keys, -s, unavailable), axis=-1)
    return order[:, : min(M, int(avail.sum()))]
