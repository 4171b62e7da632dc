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
    *,
    order: Sequence[int] | None = None,
) -> dict[int, list[int]]:
    """expert → sorted candidate indices.

    ``broadcast``: every expert gets all G. ``split``: candidates are shuffled by ``rng``
    (one ``rng.permutation(G)``) and dealt in contiguous chunks of ⌊G/M⌋ or ⌈G/M⌉, the
    ⌈G/M⌉ chunks to the leading experts (``experts`` is best-ranked first); each candidate is
    scored exactly once. Experts left with no candidate (G < M) are omitted, so no empty
    request is sent. ``rng`` is required for ``split``.

    ``order`` (``split`` only): the shuffle of ``range(G)`` drawn by the caller instead (the
    simulator draws a whole round's in one call); nothing is drawn from ``rng``.
    The server's gatherers and the simulator deal through this one function.
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
    m = len(experts)
    if order is not None:
        if sorted(order) != list(range(num_candidates)):
            raise ConfigError(
                f"order {list(order)} is not a permutation of 0..{num_candidates - 1}"
            )
    elif rng is None:
        raise ConfigError("dispatch mode 'split' needs a seeded numpy Generator (rng=...)")
    else:
        order = rng.permutation(num_candidates).tolist()
    return _deal(experts, order, chunk_sizes(num_candidates, m))


def chunk_sizes(num_candidates: int, m: int) -> list[int]:
    """``split``: how many candidates each of the ``m`` ranked experts gets (⌈G/M⌉ to the
    leading ones, ⌊G/M⌋ to the rest; 0 when G < M)."""
    base, extra = divmod(num_candidates, m)
    return [base + 1 if j < extra else base for j in range(m)]


def _deal(experts: Sequence[int], order: Sequence[int], sizes: Sequence[int]) -> dict[int, list[int]]:
    """Contiguous chunks of ``order`` of the given ``sizes`` (one per expert); experts whose
    chunk is empty are left out."""
    out: dict[int, list[int]] = {}
    start = 0
    for e, size in zip(experts, sizes):
        if size:
            out[e] = sorted(order[start : start + size])
        start += size
    return out
