"""One simulated round in closed form over arrays of requests (the vectorised timing path).

The event engine (:mod:`fedgrpo.sim.requests`) steps each request through send → arrive →
queue → compute → deliver and feeds results to :class:`fedgrpo.rounds.RoundState`. Here the
same round is computed for all requests at once:

* **device side** (:func:`timeline`): per attempt, the draws of its ``(seed, round, client,
  "request")`` stream (the same indices the engine uses), uplink, availability at arrival,
  the device's FIFO queue as a Lindley recursion ``start = max(arrival, previous end)``
  (vectorised over devices, one step per queue position), crash / offline-mid-request /
  done, downlink;
* **server side** (:func:`server`): the round semantics of :mod:`fedgrpo.rounds` for a
  timing-only round: a *unit* is the set of assignments that answer the same candidates (a
  primary and the over-selected extras mirroring its shard; a whole group with
  ``broadcast``) and is satisfied by its first ``need`` answers, which cancels the rest; group
  quorum, round quorum, completion, deadline; retries after failures.

(:mod:`fedgrpo.sim.vserver`). The two depend on each other (a cancelled request frees its device for the next one; a
freed device answers earlier...). :func:`simulate_round` iterates them to their fixed point,
which is the causal trajectory: each pass gets every event right up to a later time, and the
loop stops when nothing changes (2-4 passes in practice). Timing-only rewards are always
valid values, so no result is ever invalid here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedgrpo.sim.rng import normal_at, uniform_at
from fedgrpo.sim.vavail import AvailabilityTable

__all__ = ["Attempts", "Fleet", "PlanArrays", "Rules", "Timeline", "make_attempts", "timeline"]

INF = math.inf
# attempt fates (Timeline.code)
DROPPED, OFFLINE, SKIPPED, LOST, CRASH, OFFLINE_MID, DONE, DONE_CANCELLED = range(8)
MAX_PASSES = 200


@dataclass
class Fleet:
    """Per-client constants (sim.devices.DeviceTiming as arrays) and availability."""

    rtt_mu: np.ndarray
    rtt_sigma: np.ndarray
    speed_sigma: np.ndarray
    sec_fixed: np.ndarray
    sec_per_unit: np.ndarray
    down_bps: np.ndarray
    up_bps: np.ndarray
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
    crash_u: np.ndarray
    crash_at: np.ndarray
    req: np.ndarray
    resp: np.ndarray
    arrive: np.ndarray
    until: np.ndarray  # availability at arrival: NaN offline, else when it goes offline

    def __len__(self) -> int:
        return len(self.a)


_TL_FIELDS = ("code", "start", "spent", "done", "deliver", "notice", "last")


@dataclass
class Timeline:
    code: np.ndarray
    start: np.ndarray
    spent: np.ndarray  # device seconds used (started attempts)
    done: np.ndarray  # compute finished (DONE*)
    deliver: np.ndarray  # result at the server (DONE)
    notice: np.ndarray  # failure seen by the server (OFFLINE, CRASH)
    last: np.ndarray  # the latest time the attempt's fate was compared with its cancel time

    def take(self, rows: np.ndarray, other: Timeline) -> None:
        """Overwrite ``rows`` with ``other`` (a timeline of just those attempts)."""
        for f in _TL_FIELDS:
            getattr(self, f)[rows] = getattr(other, f)

    def resized(self, n_keep: int, n: int) -> Timeline:
        """The first ``n_keep`` attempts kept, room for ``n`` (the rest to be filled)."""
        out = []
        for f in _TL_FIELDS:
            old = getattr(self, f)
            new = np.zeros(n, dtype=old.dtype)
            new[:n_keep] = old[:n_keep]
            out.append(new)
        return Timeline(*out)

    def device_free(self, plan: PlanArrays, att: Attempts, free_at: np.ndarray) -> np.ndarray:
        """When each device is free after the round's started attempts (runs to completion)."""
        c = self.code
        started = np.nonzero(
            (c == CRASH) | (c == OFFLINE_MID) | (c == DONE) | (c == DONE_CANCELLED)
        )[0]
        free = free_at.copy()
        np.maximum.at(free, plan.client[att.a[started]], self.start[started] + self.spent[started])
        return free


def make_attempts(
    fleet: Fleet, rules: Rules, plan: PlanArrays, keys: np.ndarray, a: np.ndarray,
    no: np.ndarray, t_send: np.ndarray, draw: np.ndarray,
) -> Attempts:  # fmt: skip
    """Attempts of assignments ``a`` sent at ``t_send``, the ``draw``-th request of their
    client this round (2 normals + 2 uniforms each, as :mod:`fedgrpo.sim.requests` draws)."""
    cl = plan.client[a]
    ka = keys[a]
    i0, i1 = 2 * draw, 2 * draw + 1
    z_rtt, z_speed = normal_at(ka, i0), normal_at(ka, i1)
    k = plan.k[a]
    # sim.devices.request_timing over arrays
    half = np.exp(fleet.rtt_mu[cl] + fleet.rtt_sigma[cl] * z_rtt) / 2
    compute = (fleet.sec_fixed[cl] + k * fleet.sec_per_unit[cl]) * np.exp(
        fleet.speed_sigma[cl] * z_speed
    )
    req = rules.req_overhead + k * rules.est_per_cand
    resp = rules.resp_overhead + k * rules.resp_per_value
    arrive = t_send + (half + req / fleet.down_bps[cl])  # sim.devices.transfer_s
    cu, ca = uniform_at(ka, i0), uniform_at(ka, i1)
    # the device's state at arrival is a function of time alone, so it is asked once per
    # attempt, whatever the passes decide about cancellations
    until = fleet.avail.online_until(cl, arrive)
    return Attempts(a, no, t_send, half, compute, cu, ca, req, resp, arrive, until)


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


def timeline(
    fleet: Fleet, rules: Rules, plan: PlanArrays, att: Attempts, cancel: np.ndarray,
    free_at: np.ndarray,
) -> Timeline:  # fmt: skip
    """What each attempt does on its device, given when its assignment is cancelled.
    (One function: the queue loop's steps share a dozen arrays; split, it reads worse.)"""
    n = len(att)
    cl = plan.client[att.a]
    code = np.full(n, DROPPED, dtype=np.int8)
    start = np.full(n, np.nan)
    spent = np.zeros(n)
    done = np.full(n, np.nan)
    deliver = np.full(n, np.nan)
    notice = np.full(n, np.nan)
    last = att.arrive.copy()
    live = np.nonzero(cancel[att.a] >= att.arrive)[0]  # else dropped on arrival
    until = att.until[live]
    off = live[np.isnan(until)]
    code[off] = OFFLINE
    notice[off] = np.maximum(att.arrive[off], att.t_send[off] + rules.connect_timeout_s)
    on = ~np.isnan(until)
    qi, qu = live[on], until[on]
    o = np.lexsort((att.arrive[qi], cl[qi]))
    qi, qu = qi[o], qu[o]
    gid, pos = _groups(cl[qi])
    devs = cl[qi][pos == 0] if len(qi) else np.zeros(0, dtype=np.int64)
    free = free_at[devs].copy()
    by_pos = np.argsort(pos, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(pos))]) if len(qi) else np.zeros(1, int)
    for p in range(len(bounds) - 1):
        sl = by_pos[bounds[p] : bounds[p + 1]]
        j, g, u = qi[sl], gid[sl], qu[sl]
        s = np.maximum(att.arrive[j], free[g])
        last[j] = s
        skip = cancel[att.a[j]] < s
        lost = ~skip & (s > u)
        run = ~skip & ~lost
        e = s + att.compute[j]
        t_crash = s + att.compute[j] * att.crash_at[j]
        crash = run & (att.crash_u[j] < fleet.crash_p[cl[j]]) & (t_crash < u)
        mid = run & ~crash & (u < e)
        fin = run & ~crash & ~mid
        end = np.where(crash, t_crash, np.where(mid, u, e))
        free[g[run]] = end[run]
        code[j[skip]] = SKIPPED
        code[j[lost]] = LOST
        code[j[crash]] = CRASH
        code[j[mid]] = OFFLINE_MID
        start[j[run]] = s[run]
        spent[j[run]] = (end - s)[run]
        notice[j[crash]] = t_crash[crash] + att.half[j[crash]]
        jf = j[fin]
        done[jf] = e[fin]
        last[jf] = e[fin]
        ok = cancel[att.a[jf]] >= e[fin]
        code[jf[ok]] = DONE
        code[jf[~ok]] = DONE_CANCELLED
        deliver[jf[ok]] = e[fin][ok] + (
            att.half[jf[ok]] + att.resp[jf[ok]] / fleet.up_bps[cl[jf[ok]]]
        )
    return Timeline(code, start, spent, done, deliver, notice, last)
