"""Every client's availability as arrays, for the vectorised simulator.

The windows are the event engine's own: each client's process is built by
:meth:`fedgrpo.sim.config.AvailabilitySpec.build` from its ``availability`` stream, and an on/off
chain (:class:`~fedgrpo.sim.availability.MarkovAvailability`) is read out as its flip times
(:meth:`~fedgrpo.sim.availability.MarkovAvailability.flips_until`) into one row of a table;
the object is then dropped (a numpy generator per client would cost ~3 KB each at 1M clients).
A row covers virtual time up to its last flip; a query past it rebuilds the chain (the same
draws) further. Each client's current window (between two flips) is kept, so a query that
falls in it, nearly all of them, is answered with two comparisons. Always-on clients need no row; other processes (traces) are asked one query
at a time (:meth:`online_until` of the object, kept).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedgrpo.sim.availability import Availability
from fedgrpo.sim.config import ClientSpec
from fedgrpo.sim.rng import PURPOSES
from fedgrpo.sim.vpcg import stream_uniforms

__all__ = ["AvailabilityTable"]

_ALWAYS, _MARKOV, _OTHER = 0, 1, 2


class AvailabilityTable:
    """``online_until(clients, t)`` over arrays: NaN where offline, else when it goes offline."""

    def __init__(self, clients: Sequence[ClientSpec], seed: int, horizon_s: float = 3600.0) -> None:
        self._clients = clients
        self._seed = seed
        self._horizon = horizon_s
        n = len(clients)
        self.kind = np.empty(n, dtype=np.int8)
        self._mean = np.zeros((n, 2))  # markov: mean on, mean off
        self._other: dict[int, Availability] = {}
        for cid, spec in enumerate(clients):
            a, p = spec.availability, spec.device
            if a.kind == "always" or (a.kind == "profile" and p.mean_on_s is None):
                self.kind[cid] = _ALWAYS
            elif a.kind == "trace":
                self.kind[cid] = _OTHER
            else:
                self.kind[cid] = _MARKOV
                self._mean[cid] = (
                    (p.mean_on_s, p.mean_off_s)
                    if a.kind == "profile"
                    else (a.mean_on_s, a.mean_off_s)
                )
        self._ready = np.zeros(n, dtype=bool)  # markov row drawn
        self._online0 = np.zeros(n, dtype=bool)
        self._last = np.full(n, -math.inf)  # rows are valid for t < last flip
        self._flips = np.full((n, 0), math.inf)
        # each client's window of its latest query: [lo, hi), online in it or not
        self._win_lo = np.full(n, math.inf)
        self._win_hi = np.full(n, math.inf)
        self._win_on = np.zeros(n, dtype=bool)

    def _build(self, cid: int) -> Availability:
        spec = self._clients[cid]
        return spec.availability.build(spec.device, self._seed, cid)

    def _chains(self, cids: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """:class:`~fedgrpo.sim.availability.MarkovAvailability` of ``cids`` from the first
        ``count`` draws of their ``availability`` streams: online at 0, ``count - 1`` flips."""
        u = stream_uniforms(self._seed, cids, PURPOSES["availability"], count)
        on, off = self._mean[cids, 0], self._mean[cids, 1]
        online0 = u[:, 0] < on / (on + off)
        flip = np.arange(count - 1)
        online_before = online0[:, None] ^ (flip % 2 == 1)[None, :]
        mean = np.where(online_before, on[:, None], off[:, None])
        w = u[:, 1:]
        dur = np.where(w > 0, -mean * np.log1p(-np.where(w > 0, w, 0.0)), 0.0)
        return online0, np.cumsum(dur, axis=1)

    def _fill(self, cids: np.ndarray, until: np.ndarray) -> None:
        """(Re)draw the chains of ``cids`` past the times ``until`` (the flips up to one past
        it are kept)."""
        need = np.maximum(until, self._horizon)
        count, todo, pos = 16, cids, np.arange(len(cids))
        while len(todo):
            o0, flips = self._chains(todo, count)
            ok = flips[:, -1] > need[pos]
            self._store(todo[ok], o0[ok], flips[ok], need[pos[ok]])
            todo, pos, count = todo[~ok], pos[~ok], count * 2

    def _store(
        self, cids: np.ndarray, online0: np.ndarray, flips: np.ndarray, need: np.ndarray
    ) -> None:
        if not len(cids):
            return
        keep = (flips <= need[:, None]).sum(axis=1) + 1  # up to one past `need`
        width = int(keep.max())
        if width > self._flips.shape[1]:
            pad = np.full((len(self._flips), width - self._flips.shape[1]), math.inf)
            self._flips = np.concatenate([self._flips, pad], axis=1)
        block = np.full((len(cids), self._flips.shape[1]), math.inf)
        block[:, :width] = flips[:, :width]
        block[np.arange(block.shape[1])[None, :] >= keep[:, None]] = math.inf
        self._flips[cids] = block
        self._last[cids] = flips[np.arange(len(cids)), keep - 1]
        self._online0[cids] = online0
        self._ready[cids] = True
        # the window at time 0 (before the first flip), where the chain does not flip at 0
        first = self._flips[cids, 0]
        self._win_lo[cids] = np.where(first > 0, -math.inf, math.inf)
        self._win_hi[cids] = first
        self._win_on[cids] = online0

    def prefill(self) -> None:
        """Draw every on/off chain now (in blocks), instead of at each client's first query."""
        markov = np.nonzero((self.kind == _MARKOV) & ~self._ready)[0]
        for i in range(0, len(markov), 65536):
            block = markov[i : i + 65536]
            self._fill(block, np.zeros(len(block)))

    def online_until(self, clients: np.ndarray, t: np.ndarray) -> np.ndarray:
        kind = self.kind[clients]
        m = np.nonzero(kind == _MARKOV)[0]
        if m.size == len(clients):
            return self._markov(clients, t)
        out = np.full(len(clients), math.inf)
        if m.size:
            out[m] = self._markov(clients[m], t[m])
        for i in np.nonzero(kind == _OTHER)[0].tolist():
            cid = int(clients[i])
            avail = self._other.get(cid)
            if avail is None:
                avail = self._other[cid] = self._build(cid)
            u = avail.online_until(float(t[i]))
            out[i] = math.nan if u is None else u
        return out

    def _markov(self, cl: np.ndarray, t: np.ndarray) -> np.ndarray:
        # most queries fall in the window of the client's previous one (rounds are short
        # next to on/off periods): two comparisons; the others bisect the client's row
        out = np.where(self._win_on[cl], self._win_hi[cl], math.nan)
        miss = np.nonzero(~((self._win_lo[cl] <= t) & (t < self._win_hi[cl])))[0]
        if miss.size:
            out[miss] = self._lookup(cl[miss], t[miss])
        return out

    def _lookup(self, cl: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The answers for ``(cl, t)`` from the rows; the windows of ``cl`` set to those
        holding ``t`` (a client asked twice here keeps one: each is checked at each use)."""
        stale = ~self._ready[cl] | (t >= self._last[cl])
        if stale.any():
            idx = np.nonzero(stale)[0]
            cids, inv = np.unique(cl[idx], return_inverse=True)
            tmax = np.full(len(cids), -math.inf)
            np.maximum.at(tmax, inv, t[idx])
            self._fill(cids, tmax * 2.0)
        flips = self._flips
        width = flips.shape[1]
        flat = flips.reshape(-1)
        base = cl * width
        k = self._bisect(flat, base, width, np.zeros(len(cl), dtype=np.int64), t)
        lo = np.where(k > 0, flat[base + np.maximum(k - 1, 0)], -math.inf)
        hi = flat[base + np.minimum(k, width - 1)]
        online = self._online0[cl] ^ (k % 2 == 1)
        self._win_lo[cl], self._win_hi[cl], self._win_on[cl] = lo, hi, online
        return np.where(online, hi, math.nan)

    @staticmethod
    def _bisect(
        flat: np.ndarray, base: np.ndarray, width: int, lo: np.ndarray, t: np.ndarray
    ) -> np.ndarray:
        """Flips at or before ``t`` per query (at least ``lo``): bisect_right, all at once."""
        hi = np.full(len(lo), width, dtype=np.int64)
        while True:
            open_ = lo < hi
            if not open_.any():
                return lo
            mid = (lo + hi) // 2
            right = open_ & (flat[base + np.minimum(mid, width - 1)] <= t)
            lo = np.where(right, mid + 1, lo)
            hi = np.where(open_ & ~right, mid, hi)

    @property
    def nbytes(self) -> int:
        return int(self._flips.nbytes + self._last.nbytes + self.kind.nbytes)
