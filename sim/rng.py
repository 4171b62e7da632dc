"""Seeding: one seed → independent, stable random streams per (client, purpose).

Each stream is ``numpy.random.SeedSequence(seed, spawn_key=(client_id, purpose))``: the same
client id always gets the same stream whatever the other clients are, so changing one client's
profile never changes another client's draws. Draws are buffered in blocks for speed (a
Python float from a list is ~20× cheaper than a scalar numpy call); a stream's sequence of
values depends only on the order in which *it* is consumed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PURPOSES", "ClientStream", "server_rng", "stream_generator"]

#: stream purposes (part of the spawn key: never reorder, only append)
PURPOSES = {"request": 0, "availability": 1, "reward": 2, "server": 3}
_SERVER_ID = 2**31 - 1


def stream_generator(seed: int, client_id: int, purpose: str) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(client_id, PURPOSES[purpose])))
    )


def server_rng(seed: int) -> np.random.Generator:
    """The server's own stream (question sampling, selection, dispatch)."""
    return stream_generator(seed, _SERVER_ID, "server")


class ClientStream:
    """Buffered standard-normal and uniform draws from one generator."""

    __slots__ = ("_block", "_gen", "_n", "_ni", "_u", "_ui")

    def __init__(self, gen: np.random.Generator, block: int = 64) -> None:
        self._gen = gen
        self._block = block
        self._n: list[float] = []
        self._ni = 0
        self._u: list[float] = []
        self._ui = 0

    def normal(self) -> float:
        if self._ni >= len(self._n):
            self._n = self._gen.standard_normal(self._block).tolist()
            self._ni = 0
        v = self._n[self._ni]
        self._ni += 1
        return v

    def uniform(self) -> float:
        if self._ui >= len(self._u):
            self._u = self._gen.random(self._block).tolist()
            self._ui = 0
        v = self._u[self._ui]
        self._ui += 1
        return v

    def normals(self, k: int) -> list[float]:
        """The next ``k`` standard normals (the same values as ``k`` calls of :meth:`normal`)."""
        i = self._ni
        j = i + k
        if j <= len(self._n):
            self._ni = j
            return self._n[i:j]
        return [self.normal() for _ in range(k)]

    def uniforms(self, k: int) -> list[float]:
        """The next ``k`` uniforms in [0, 1) (the same values as ``k`` calls of :meth:`uniform`)."""
        i = self._ui
        j = i + k
        if j <= len(self._u):
            self._ui = j
            return self._u[i:j]
        return [self.uniform() for _ in range(k)]

    def exponential(self, mean: float) -> float:
        u = self.uniform()
        return -mean * float(np.log1p(-u)) if u > 0 else 0.0
