"""Seeding: every draw derives from ``(seed, round, client, purpose)``.

Two kinds of stream:

* **Round streams** (request timing, crash draws, rewards, the server's question sampling,
  selection and dispatch): value ``i`` of the stream ``(seed, round, client, purpose)`` is a
  pure function of those five numbers -- the ``i``-th output of SplitMix64 (Steele, Lea &
  Flood 2014, the generator numpy and Java use to seed others; it passes BigCrush) started
  from a key hashed out of ``(seed, round, client, purpose)``. So a client asked in round 7
  draws the same numbers whatever it did in rounds 0-6, whatever the other clients are, and
  whether or not the run was resumed. Keys and values are computed for all of a round's
  clients in one vectorised call (:func:`round_streams`); creating a numpy ``Generator`` per
  (client, round) costs ~35 µs, more than a whole simulated request.
* **Time streams** (a device's on/off availability process): ``numpy.random.SeedSequence(seed,
  spawn_key=(client, purpose))``. Availability is a function of virtual *time*, not of rounds
  (a phone goes offline whether or not a round is running); its windows are drawn in order
  from the client's own stream, so they also never depend on other clients or on the rounds.

Draws are buffered for speed (a Python float from a list is ~20× cheaper than a scalar numpy
call); a stream's sequence of values depends only on the order in which *it* is consumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = [
    "PURPOSES",
    "ClientStream",
    "CounterGenerator",
    "normal_at",
    "normals_at",
    "round_keys",
    "round_streams",
    "server_rng",
    "stream_generator",
    "uniform_at",
]

#: stream purposes (part of the key: never reorder, only append)
PURPOSES = {"request": 0, "availability": 1, "reward": 2, "server": 3, "behaviour": 4, "probe": 5}
_SERVER_ID = 2**31 - 1
_M64 = 2**64 - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_NORMAL_SALT = 0x6A09E667F3BCC909  # separates a stream's normal draws from its uniforms
_TWO_53 = 2.0**-53


def stream_generator(
    seed: int, client_id: int, purpose: str, round_index: int | None = None
) -> np.random.Generator:
    """A numpy generator for ``(seed, client, purpose)`` or ``(seed, round, client, purpose)``."""
    key: tuple[int, ...] = (client_id, PURPOSES[purpose])
    if round_index is not None:
        key = (*key, round_index)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def server_rng(seed: int, round_index: int) -> np.random.Generator:
    """The server's stream for one round (question sampling, selection, dispatch)."""
    return stream_generator(seed, _SERVER_ID, "server", round_index)


# ------------------------------------------------------------------ counter-based streams


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on an array of uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _C1
    z = (z ^ (z >> np.uint64(27))) * _C2
    return z ^ (z >> np.uint64(31))


def _keys(seed: int, round_index: int, clients: np.ndarray, purpose: int) -> np.ndarray:
    """One uint64 key per client: a SplitMix64 hash chain over (seed, round, client, purpose)."""
    h = np.full(len(clients), seed & _M64, dtype=np.uint64)
    for part in (np.uint64(round_index & _M64), clients.astype(np.uint64), np.uint64(purpose)):
        h = _mix((h ^ part) + _GOLDEN)
    return h


def uniform_at(keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Uniform number ``index[i]`` of the stream with key ``keys[i]`` (elementwise)."""
    z = keys + (index.astype(np.uint64) + np.uint64(1)) * _GOLDEN
    return (_mix(z) >> np.uint64(11)).astype(np.float64) * _TWO_53


def normal_at(keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Standard normal number ``index[i]`` of the stream with key ``keys[i]``: Box-Muller,
    normal ``j`` from uniforms ``j`` of two salted keys."""
    return normals_at(keys, index)[0]


def normals_at(keys: np.ndarray, *indices: np.ndarray) -> list[np.ndarray]:
    """:func:`normal_at` at several index arrays of the same keys (the salted keys once)."""
    ka = keys ^ np.uint64(_NORMAL_SALT)
    kb = _mix(ka)
    out = []
    for index in indices:
        a = uniform_at(ka, index)
        b = uniform_at(kb, index)
        out.append(np.sqrt(-2.0 * np.log1p(-a)) * np.cos(2.0 * np.pi * b))
    return out


def round_keys(seed: int, round_index: int, clients: np.ndarray, purpose: str) -> np.ndarray:
    """The stream key of ``(seed, round, client, purpose)`` for each client (for
    :func:`uniform_at` / :func:`normal_at`: the vectorised simulator's random access)."""
    return _keys(seed, round_index, np.asarray(clients, dtype=np.int64), PURPOSES[purpose])


def _flat_index(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    total = int(counts.sum())
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - first + np.repeat(starts, counts)


def _uniforms(keys: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For each key, ``counts[k]`` uniforms in [0, 1) from index ``starts[k]``, concatenated."""
    return uniform_at(np.repeat(keys, counts), _flat_index(starts, counts))


def _normals(keys: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For each key, ``counts[k]`` standard normals from index ``starts[k]``, concatenated."""
    return normal_at(np.repeat(keys, counts), _flat_index(starts, counts))


class _Gen(Protocol):
    def random(self, size: int) -> np.ndarray: ...
    def standard_normal(self, size: int) -> np.ndarray: ...


class CounterGenerator:
    """The generator behind one round stream: ``random(n)`` / ``standard_normal(n)`` return
    the next values of its counter sequences (what a :class:`ClientStream` refills from)."""

    __slots__ = ("_key", "_n", "_u")

    def __init__(self, key: int, u_used: int = 0, n_used: int = 0) -> None:
        self._key = np.array([key], dtype=np.uint64)
        self._u, self._n = u_used, n_used

    def random(self, size: int) -> np.ndarray:
        out = _uniforms(self._key, np.array([self._u]), np.array([size]))
        self._u += size
        return out

    def standard_normal(self, size: int) -> np.ndarray:
        out = _normals(self._key, np.array([self._n]), np.array([size]))
        self._n += size
        return out


def round_streams(
    seed: int,
    round_index: int,
    clients: Sequence[int],
    purpose: str,
    uniforms: Sequence[int],
    normals: Sequence[int] | None = None,
) -> list[ClientStream]:
    """One stream per client for ``(seed, round, client, purpose)``, prefilled in one
    vectorised call with ``uniforms[i]`` uniforms and ``normals[i]`` normals for client ``i``
    (what the round is known to need; a stream extends itself past that on demand)."""
    cl = np.asarray(clients, dtype=np.int64)
    keys = _keys(seed, round_index, cl, PURPOSES[purpose])
    zeros = np.zeros(len(cl), dtype=np.int64)
    nu = np.asarray(uniforms, dtype=np.int64)
    nn = np.asarray(normals if normals is not None else zeros, dtype=np.int64)
    u_flat = _uniforms(keys, zeros, nu).tolist()
    n_flat = _normals(keys, zeros, nn).tolist()
    out: list[ClientStream] = []
    iu = inn = 0
    for key, ku, kn in zip(keys.tolist(), nu.tolist(), nn.tolist()):
        s = ClientStream(CounterGenerator(key, ku, kn))
        s._u, s._n = u_flat[iu : iu + ku], n_flat[inn : inn + kn]
        iu += ku
        inn += kn
        out.append(s)
    return out


class ClientStream:
    """Buffered standard-normal and uniform draws from one generator."""

    __slots__ = ("_block", "_gen", "_n", "_ni", "_u", "_ui")

    def __init__(self, gen: np.random.Generator | _Gen, block: int = 64) -> None:
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
