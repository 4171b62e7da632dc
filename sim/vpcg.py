"""numpy's ``Generator(PCG64(SeedSequence(seed, spawn_key=(client, purpose)))).random(n)`` for
many clients at once.

The event engine draws each client's availability chain from
:func:`fedgrpo.sim.rng.stream_generator` (a numpy generator per client: ~50 µs to create, so
100k clients cost seconds before the first round). The vectorised simulator needs the very
same numbers for every client, so this module runs numpy's own algorithms over arrays of
clients: SeedSequence's entropy pool (O'Neill's ``seed_seq`` hash mixing, 32-bit words),
PCG64's seeding and 128-bit LCG step, the XSL-RR output and ``random()``'s 53-bit doubles.
``tests/test_sim_vectorised.py`` checks it against numpy itself.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stream_uniforms"]

_U32 = np.uint32
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = _U32(0xCA01F9DD), _U32(0x4973F715)
_XSHIFT = _U32(16)
_POOL = 4
_M32 = np.uint64(0xFFFFFFFF)
_MUL_HI, _MUL_LO = 0x2360ED051FC65DA4, 0x4385DF649FCCF645  # PCG's 128-bit multiplier


def _words(x: int) -> list[int]:
    """numpy's ``_int_to_uint32_array``: little-endian 32-bit words (``[0]`` for 0)."""
    if x < 0:
        raise ValueError(f"seed {x} must be >= 0")
    out = []
    while True:
        out.append(x & 0xFFFFFFFF)
        x >>= 32
        if not x:
            return out


class _Hash:
    """SeedSequence's ``hashmix`` with its running constant (the same for every client)."""

    def __init__(self) -> None:
        self.const = _INIT_A

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = value ^ _U32(self.const)
        self.const = (self.const * _MULT_A) & 0xFFFFFFFF
        value = value * _U32(self.const)
        return value ^ (value >> _XSHIFT)


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r: np.ndarray = np.subtract(_MIX_L * x, _MIX_R * y, dtype=_U32)
    return r ^ (r >> _XSHIFT)


def _pool(entropy: list[np.ndarray]) -> list[np.ndarray]:
    """SeedSequence.mix_entropy over columns of uint32 words (one array per word)."""
    h = _Hash()
    n = len(entropy[0])
    zero = np.zeros(n, dtype=_U32)
    mixer = [h(entropy[i] if i < len(entropy) else zero) for i in range(_POOL)]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                mixer[dst] = _mix(mixer[dst], h(mixer[src]))
    for src in range(_POOL, len(entropy)):
        for dst in range(_POOL):
            mixer[dst] = _mix(mixer[dst], h(entropy[src]))
    return mixer


def _state64(pool: list[np.ndarray], n_words64: int) -> list[np.ndarray]:
    """SeedSequence.generate_state(n, uint64)."""
    const = _INIT_B
    words = []
    for i in range(2 * n_words64):
        v = pool[i % _POOL] ^ _U32(const)
        const = (const * _MULT_B) & 0xFFFFFFFF
        v = v * _U32(const)
        words.append(v ^ (v >> _XSHIFT))
    return [
        words[2 * i].astype(np.uint64) | (words[2 * i + 1].astype(np.uint64) << np.uint64(32))
        for i in range(n_words64)
    ]


def _mul_lo_full(a: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit halves of the 128-bit product a * b (a array, b constant)."""
    a_lo, a_hi = a & _M32, a >> np.uint64(32)
    b_lo, b_hi = np.uint64(b & 0xFFFFFFFF), np.uint64(b >> 32)
    p0, p1, p2, p3 = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (p0 >> np.uint64(32)) + (p1 & _M32) + (p2 & _M32)
    low = (p0 & _M32) | (mid << np.uint64(32))
    high = p3 + (p1 >> np.uint64(32)) + (p2 >> np.uint64(32)) + (mid >> np.uint64(32))
    return high, low


def _step(
    hi: np.ndarray, lo: np.ndarray, inc_hi: np.ndarray, inc_lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """state = state * MULT + inc (mod 2**128)."""
    h, low = _mul_lo_full(lo, _MUL_LO)
    h = h + lo * np.uint64(_MUL_HI) + hi * np.uint64(_MUL_LO)
    new_lo = low + inc_lo
    carry = (new_lo < low).astype(np.uint64)
    return h + inc_hi + carry, new_lo


def _add128(
    hi: np.ndarray, lo: np.ndarray, bhi: np.ndarray, blo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    new_lo = lo + blo
    return hi + bhi + (new_lo < lo).astype(np.uint64), new_lo


def stream_uniforms(seed: int, clients: np.ndarray, purpose: int, count: int) -> np.ndarray:
    """``[len(clients), count]``: row i = ``stream_generator(seed, clients[i], purpose)
    .random(count)`` (client ids < 2**32)."""
    cl = np.asarray(clients, dtype=np.int64)
    if cl.size and (cl.min() < 0 or cl.max() >= 2**32):
        raise ValueError("client ids must lie in [0, 2**32)")
    n = len(cl)
    run = [np.full(n, w, dtype=_U32) for w in _words(seed)]
    run += [np.zeros(n, dtype=_U32)] * max(0, _POOL - len(run))  # padded: spawn key follows
    entropy = [*run, cl.astype(_U32), np.full(n, purpose, dtype=_U32)]
    s0, s1, s2, s3 = _state64(_pool(entropy), 4)
    # pcg64_set_seed: state = (s0 << 64) | s1, inc = (s2 << 64) | s3; srandom_r
    inc_hi = (s2 << np.uint64(1)) | (s3 >> np.uint64(63))
    inc_lo = (s3 << np.uint64(1)) | np.uint64(1)
    zero = np.zeros(n, dtype=np.uint64)
    hi, lo = _step(zero, zero, inc_hi, inc_lo)
    hi, lo = _add128(hi, lo, s0, s1)
    hi, lo = _step(hi, lo, inc_hi, inc_lo)
    out = np.empty((n, count))
    for j in range(count):
        hi, lo = _step(hi, lo, inc_hi, inc_lo)
        x = hi ^ lo
        rot = hi >> np.uint64(58)
        v = (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))
        out[:, j] = (v >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
    return out
