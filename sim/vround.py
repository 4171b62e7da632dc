"""One simulated round in closed form over arrays of requests (the vectorised timing path).

The event engine (:mod:`fedgrpo.sim.requests`) steps each request through send → arrive →
queue → compute → deliver and feeds results to :class:`fedgrpo.rounds.RoundState`. Here the
same round is computed for all requests at once:

* **device side** (:func:`make_attempts`, :func:`timeline`): per attempt, the draws of its
  ``(seed, round, client, "request")`` stream (the same indices the engine uses), uplink,
  availability at arrival, the device's FIFO queue as a Lindley recursion ``start =
  max(arrival, previous end)`` (vectorised over devices: the requests laid out
  position-major, busiest devices first, so that queue position ``p`` is one contiguous
  slice and its devices a prefix), crash / offline-mid-request / done, downlink;
* **server side** (:mod:`fedgrpo.sim.vserver`): the round semantics of :mod:`fedgrpo.rounds`
  for a timing-only round: a *unit* is the set of assignments that answer the same
  candidates (a primary and the over-selected extras mirroring its shard; a whole group with
  ``broadcast``) and is satisfied by its first ``need`` answers, which cancels the rest; group
  quorum, round quorum, completion, deadline; retries after failures.

The two depend on each other (a cancelled request frees its device for the next one; a
freed device answers earlier...). :func:`fedgrpo.sim.vserver.simulate_round` iterates them to
their fixed point, which is the causal trajectory: each pass gets every event right up to a
later time, and the loop stops when nothing changes (2-4 passes in practice; after the first,
only the devices where a request is now kept instead of dropped or the other way round are
recomputed). Timing-only rewards are always valid values, so no result is ever invalid here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedgrpo.sim.devices import TimingArrays, request_timing_arrays, transfer_s
from fedgrpo.sim.rng import normals_at, uniform_at
from fedgrpo.sim.vavail import AvailabilityTable

__all__ = [
    "Attempts", "Draws", "Fleet", "PlanArrays", "Rules", "Timeline", "draw_attempts",
    "make_attempts", "positions_by", "send", "sorted_by", "timeline",
]  # fmt: skip

INF = math.inf
# attempt fates (Timeline.code)
DROPPED, OFFLINE, SKIPPED, LOST, CRASH, OFFLINE_MID, DONE, DONE_CANCELLED = range(8)
MAX_PASSES = 200


@dataclass
class Fleet:
    """Per-client constants (sim.devices.DeviceTiming as arrays) and availability."""

    timing: TimingArrays
    crash_p: np.ndarray
    avail: AvailabilityTable


@dataclass(frozen=True)
class Rules:
    deadline_s: float
    connect_timeout_s: float
    max_retries: int
    backoff_s: float
    min_remaining_s: float
    quorum: int
    round_quorum: float | None
    close_early: bool
    req_overhead: int
    est_per_cand: int
    resp_overhead: int
    resp_per_value: int


@dataclass
class PlanArrays:
    """A round's plan as arrays: assignment ``a`` = question ``a // per_q``, position
    ``a % per_q`` (the primaries with a shard, then the over-selected extras: the layout of
    :func:`fedgrpo.rounds.build_plan`)."""

    client: np.ndarray  # [N]
    unit: np.ndarray  # [N] the unit it answers for
    k: np.ndarray  # [N] candidates it scores
    unit_size: np.ndarray  # [U] candidates of a unit
    groups: int
    units_per_group: int
    need: int  # answers a unit wants (1 split, M broadcast)
    group_size: int

    @property
    def n(self) -> int:
        return len(self.client)


@dataclass
class Attempts:
    a: np.ndarray  # assignment
    no: np.ndarray  # 1-based attempt number
    t_send: np.ndarray
    half: np.ndarray
    compute: np.ndarray
    req: np.ndarray
    resp: np.ndarray
    arrive: np.ndarray
    until: np.ndarray  # availability at arrival: NaN offline, else when it goes offline
    # derived per attempt once, for the queue passes
    cl: np.ndarray  # its client
    crash_in: np.ndarray  # compute × its crash point draw: when after the start it would crash
    crashes: np.ndarray  # bool: its crash draw < the device's crash probability
    back: np.ndarray  # downlink seconds of its result

    def __len__(self) -> int:
        return len(self.a)


TL_FIELDS = ("code", "start", "spent", "done", "deliver", "notice", "at")


@dataclass
class Timeline:
    code: np.ndarray
    start: np.ndarray
    spent: np.ndarray  # device seconds used (started attempts)
    done: np.ndarray  # compute finished (DONE*)
    deliver: np.ndarray  # result at the server (DONE)
    notice: np.ndarray  # failure seen by the server (OFFLINE, CRASH)
    at: np.ndarray  # when it was kept or dropped: its start (queue head), else its arrival

    @classmethod
    def empty(cls, n: int) -> Timeline:
        nan = np.full(n, np.nan)
        return cls(
            np.full(n, DROPPED, dtype=np.int8), nan, np.zeros(n), nan.copy(), nan.copy(),
            nan.copy(), np.zeros(n),
        )  # fmt: skip

    def recancel(self, att: Attempts, rows: np.ndarray, cancel: np.ndarray) -> None:
        """Attempts ``rows`` ran to completion; whether their result is still wanted when it
        is done (DONE) or not (DONE_CANCELLED) under the cancel times ``cancel``."""
        ok = cancel[att.a[rows]] >= self.done[rows]
        self.code[rows] = np.where(ok, DONE, DONE_CANCELLED)
        self.deliver[rows] = np.where(ok, self.done[rows] + att.back[rows], np.nan)

    def device_free(self, plan: PlanArrays, att: Attempts, free_at: np.ndarray) -> np.ndarray:
        """When each device is free after the round's started attempts (runs to completion)."""
        c = self.code
        started = np.nonzero(
            (c == CRASH) | (c == OFFLINE_MID) | (c == DONE) | (c == DONE_CANCELLED)
        )[0]
        free = free_at.copy()
        np.maximum.at(free, att.cl[started], self.start[started] + self.spent[started])
        return free


@dataclass
class Draws:
    """Attempts before they are sent: their draws and sizes, which do not depend on when (so
    the next round's first sends can be drawn while this round runs)."""

    a: np.ndarray
    no: np.ndarray
    half: np.ndarray
    compute: np.ndarray
    req: np.ndarray
    resp: np.ndarray
    cl: np.ndarray
    crash_in: np.ndarray
    crashes: np.ndarray
    back: np.ndarray
    uplink: np.ndarray  # seconds from send to arrival


def make_attempts(
    fleet: Fleet, rules: Rules, plan: PlanArrays, keys: np.ndarray, a: np.ndarray,
    no: np.ndarray, t_send: np.ndarray, draw: np.ndarray,
) -> Attempts:  # fmt: skip
    """Attempts of assignments ``a`` sent at ``t_send``, the ``draw``-th request of their
    client this round (2 normals + 2 uniforms each, as :mod:`fedgrpo.sim.requests` draws)."""
    return send(fleet, draw_attempts(fleet, rules, plan, keys, a, no, draw), t_send)


def draw_attempts(
    fleet: Fleet, rules: Rules, plan: PlanArrays, keys: np.ndarray, a: np.ndarray,
    no: np.ndarray, draw: np.ndarray,
) -> Draws:  # fmt: skip
    """:func:`make_attempts` up to the send time (pure: reads ``fleet.timing`` only)."""
    cl = plan.client[a]
    ka = keys[a]
    i0 = 2 * draw
    i1 = i0 + 1
    z_rtt, z_speed = normals_at(ka, i0, i1)
    k = plan.k[a]
    t = fleet.timing
    half, compute = request_timing_arrays(
        t.rtt_mu[cl], t.rtt_sigma[cl], t.speed_sigma[cl], t.sec_fixed[cl], t.sec_per_unit[cl],
        k, z_rtt, z_speed,
    )  # fmt: skip
    req = rules.req_overhead + k * rules.est_per_cand
    resp = rules.resp_overhead + k * rules.resp_per_value
    cu, ca = uniform_at(ka, i0), uniform_at(ka, i1)
    return Draws(
        a, no, half, compute, req, resp, cl, compute * ca, cu < fleet.crash_p[cl],
        transfer_s(half, resp, t.up_bps[cl]), transfer_s(half, req, t.down_bps[cl]),
    )  # fmt: skip


def send(fleet: Fleet, d: Draws, t_send: np.ndarray | float) -> Attempts:
    """The attempts ``d`` sent at ``t_send`` (an array, or one time for all)."""
    arrive = t_send + d.uplink
    t_send = np.broadcast_to(np.asarray(t_send, dtype=np.float64), arrive.shape)
    # the device's state at arrival is a function of time alone, so it is asked once per
    # attempt, whatever the passes decide about cancellations (not thread-safe: it caches)
    until = fleet.avail.online_until(d.cl, arrive)
    return Attempts(
        d.a, d.no, t_send, d.half, d.compute, d.req, d.resp, arrive, until, d.cl, d.crash_in,
        d.crashes, d.back,
    )  # fmt: skip


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a sorted key array: group id of each element and position within its group."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    first = np.empty(len(keys), dtype=bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    gid = np.cumsum(first) - 1
    pos = np.arange(len(keys)) - np.nonzero(first)[0][gid]
    return gid, pos


def positions_by(major: np.ndarray) -> np.ndarray:
    """Each element's position among the elements with the same (non-negative integer)
    ``major``, in index order."""
    o = sorted_by(major)
    out = np.empty(len(major), dtype=np.int64)
    out[o] = _groups(major[o])[1]
    return out


def sorted_by(major: np.ndarray, minor: np.ndarray | None = None) -> np.ndarray:
    """``np.lexsort((minor, major))`` (a stable sort by ``major``, then ``minor``, then
    index) for non-negative integer ``major``: one sort of packed integer keys, ~15x faster."""
    n = len(major)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    nb = max(1, (n - 1).bit_length())
    if minor is None:
        rank, rb = np.zeros(n, dtype=np.int64), 0
    else:  # dense rank of minor (equal values, equal rank)
        o = np.argsort(minor)
        m = minor[o]
        new = np.empty(n, dtype=np.int64)
        new[0] = 0
        np.not_equal(m[1:], m[:-1], out=new[1:])
        rank = np.empty(n, dtype=np.int64)
        rank[o] = np.cumsum(new)
        rb = nb
    if int(major.max()).bit_length() + rb + nb > 63:
        return np.lexsort((minor, major)) if minor is not None else np.argsort(major, kind="stable")
    key = (major.astype(np.int64) << (rb + nb)) | (rank << nb) | np.arange(n)
    key.sort()
    return key & ((1 << nb) - 1)


def timeline(
    rules: Rules, att: Attempts, cancel: np.ndarray, free_at: np.ndarray, order: np.ndarray,
    tl: Timeline,
) -> None:  # fmt: skip
    """What the attempts ``order`` (sorted by device, then arrival) do on their devices,
    given when their assignments are cancelled: written into ``tl``."""
    arrive = att.arrive[order]
    live = cancel[att.a[order]] >= arrive  # else dropped on arrival
    on = live & ~np.isnan(att.until[order])
    # dropped on arrival, or offline: the device never sees them
    gone = np.nonzero(~on)[0]
    if len(gone):
        r, off, t = order[gone], live[gone], arrive[gone]
        tl.code[r] = np.where(off, OFFLINE, DROPPED).astype(np.int8)
        for f in ("start", "done", "deliver"):
            getattr(tl, f)[r] = np.nan
        tl.spent[r] = 0.0
        tl.notice[r] = np.where(off, np.maximum(t, att.t_send[r] + rules.connect_timeout_s), np.nan)
        tl.at[r] = t
    q = order[on]
    if len(q):
        _queues(att, cancel, free_at, q, tl)


def _queue_layout(cl: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For entries sorted by device: a permutation putting them position-major (every
    device's first request, then every second one, ...) with the devices in the same order at
    each position, busiest first, so that position ``p`` is the slice ``bounds[p]:bounds[p+1]``
    and its devices the first ``bounds[p+1] - bounds[p]`` ones; and the devices in that order."""
    gid, pos = _groups(cl)
    starts = np.nonzero(pos == 0)[0]
    counts = np.diff(np.append(starts, len(cl)))
    small = counts.astype(np.int16) if counts.max() < 2**15 else counts
    by_size = np.argsort(-small, kind="stable")
    g_rank = np.empty(len(starts), dtype=np.int64)
    g_rank[by_size] = np.arange(len(starts))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(pos))])
    perm = np.empty(len(cl), dtype=np.int64)
    perm[bounds[pos] + g_rank[gid]] = np.arange(len(cl))
    return perm, bounds, cl[starts[by_size]]


def _queues(
    att: Attempts, cancel: np.ndarray, free_at: np.ndarray, q: np.ndarray, tl: Timeline
) -> None:
    """The devices' FIFO queues, a Lindley recursion ``start = max(arrival, previous end)``
    vectorised over devices, one step per queue position."""
    perm, bounds, devs = _queue_layout(att.cl[q])
    j = q[perm]
    arrive, comp, c_in = att.arrive[j], att.compute[j], att.crash_in[j]
    u, cn, cr = att.until[j], cancel[att.a[j]], att.crashes[j]
    s = np.empty(len(j))
    free = free_at[devs]
    for p in range(len(bounds) - 1):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        f = free[: hi - lo]
        sp = np.maximum(arrive[lo:hi], f)
        s[lo:hi] = sp
        up = u[lo:hi]
        run = (cn[lo:hi] >= sp) & (sp <= up)
        tc = sp + c_in[lo:hi]
        e = sp + comp[lo:hi]
        crash = cr[lo:hi] & (tc < up)
        free[: hi - lo] = np.where(run, np.where(crash, tc, np.minimum(e, up)), f)
    # the same decisions, over all positions at once
    skip = cn < s
    lost = ~skip & (s > u)
    run = ~skip & ~lost
    e = s + comp
    tc = s + c_in
    crash = run & cr & (tc < u)
    mid = run & ~crash & (u < e)
    fin = run & ~crash & ~mid
    ok = fin & (cn >= e)
    code = np.where(
        ok, DONE, np.where(fin, DONE_CANCELLED, np.where(mid, OFFLINE_MID, np.where(
            crash, CRASH, np.where(lost, LOST, SKIPPED)))),
    )  # fmt: skip
    end = np.where(crash, tc, np.where(mid, u, e))
    tl.code[j] = code
    tl.start[j] = np.where(run, s, np.nan)
    tl.spent[j] = np.where(run, end - s, 0.0)
    tl.done[j] = np.where(fin, e, np.nan)
    tl.at[j] = s
    tl.notice[j] = np.where(crash, tc + att.half[j], np.nan)
    tl.deliver[j] = np.where(ok, e + att.back[j], np.nan)
