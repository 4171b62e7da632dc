"""Which expert scores which of a question's G candidates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedgrpo.errors import ConfigError

DISPATCH_MODES = ("split", "broadcast")


def plan_dispatch(
    num_candidates: int,
    experts: Sequence[int],
    mode: str = "split",
    rng: np.random.Generator | None = None,
) -> dict[int, list[int]]:
    """expert → sorted candidate indices.

    ``broadcast``: every expert gets all G. ``split``: candidates are shuffled by ``rng`` and
    dealt in contiguous chunks of ⌊G/M⌋ or ⌈G/M⌉ (the extra ones go to randomly chosen
    experts); each candidate is scored exactly once. Experts left with no candidate (G < M)
    are omitted, so no empty request is sent. ``rng`` is required for ``split``.
    """
    if mode not in DISPATCH_MODES:
        raise ConfigError(f"dispatch mode {mode!r} is unknown; allowed: {DISPATCH_MODES}")
    if num_candidates < 0:
        raise ConfigError(f"num_candidates={num_candidates}; allowed >= 0")
    if len(set(experts)) != len(experts):
        raise ConfigError(f"experts {list(experts)} contain duplicates")
    if not experts or num_candidates == 0:
        return {}
    if mode == "broadcast":
        return {e: list(range(num_candidates)) for e in experts}
    if rng is None:
        raise ConfigError("dispatch mode 'split' needs a seeded numpy Generator (rng=...)")
    m = len(experts)
    sizes = np.full(m, num_candidates // m)
    sizes[rng.permutation(m)[: num_candidates % m]] += 1
    perm = rng.permutation(num_candidates)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return {
        e: sorted(int(c) for c in perm[bounds[j] : bounds[j + 1]])
        for j, e in enumerate(experts)
        if sizes[j] > 0
    }
