"""The server side of a vectorised round (:mod:`fedgrpo.sim.vround` has the device side and
the overview): the round semantics of :mod:`fedgrpo.rounds` applied to a timeline, and the
fixed point of both sides (:func:`simulate_round`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedgrpo.sim.vround import (
    CRASH,
    DONE,
    DONE_CANCELLED,
    INF,
    MAX_PASSES,
    OFFLINE,
    TL_FIELDS,
    Attempts,
    Draws,
    Fleet,
    PlanArrays,
    Rules,
    Timeline,
    _groups,
    draw_attempts,
    make_attempts,
    send,
    sorted_by,
    timeline,
)

__all__ = ["STATUS", "FirstDraws", "ServerView", "first_draws", "simulate_round"]


@dataclass
class ServerView:
    """The round semantics applied to a timeline (see the module docstring)."""

    sat: np.ndarray  # [U] when the unit got its `need` answers (inf: never)
    first: np.ndarray  # [U] its first answer
    t_close: float
    closed_by: str
    status: np.ndarray  # [N] final AssignmentStatus codes (STATUS order)
    attempts: np.ndarray  # [N]
    accepted: np.ndarray  # attempt indices whose answer counted (acceptance order in a unit)
    retry: tuple[np.ndarray, ...]  # (assignment, attempt no, send time, failure push time)
    ignored: int
    late: np.ndarray  # attempt indices delivered after the close


#: status codes of ServerView.status (AssignmentStatus values)
STATUS = ("answered", "failed", "cancelled", "late")
ANSWERED, FAILED, CANCELLED, LATE = range(4)


def _answers(plan: PlanArrays, tl: Timeline, att: Attempts) -> tuple[np.ndarray, ...]:
    """Deliveries: attempt index, time and rank in its unit (sorted by unit and time,
    except with one answer per unit, where the rank is 0 for the first and 1 for the
    others); the ones that count (rank < need); each unit's first and need-th answer."""
    dv = np.nonzero(tl.code == DONE)[0]
    du, dd = plan.unit[att.a[dv]], tl.deliver[dv]
    n_units = len(plan.unit_size)
    if plan.need == 1:  # only the first answer per unit counts: no sort needed
        sat = np.full(n_units, INF)
        np.minimum.at(sat, du, dd)
        tie = np.nonzero(dd == sat[du])[0]
        rank = np.ones(len(dv), dtype=np.int64)
        if np.bincount(du[tie], minlength=n_units).max(initial=0) > 1:
            _, win = np.unique(du[tie], return_index=True)  # the earliest attempt among ties
            tie = tie[win]
        rank[tie] = 0
        return dv, dd, rank, tie, sat, sat.copy()
    o = np.lexsort((dd, du))
    dv, du, dd = dv[o], du[o], dd[o]
    _, rank = _groups(du)
    sat, first = np.full(n_units, INF), np.full(n_units, INF)
    last_needed = rank == plan.need - 1
    sat[du[last_needed]] = dd[last_needed]
    at0 = rank == 0
    first[du[at0]] = dd[at0]
    return dv, dd, rank, np.nonzero(rank < plan.need)[0], sat, first


def _quorum_time(rules: Rules, plan: PlanArrays, first: np.ndarray) -> float:
    """When ``round_quorum`` of the groups have ``quorum`` rewarded candidates."""
    if rules.round_quorum is None or plan.groups == 0:
        return INF
    f = first.reshape(plan.groups, plan.units_per_group)
    o = np.argsort(f, axis=1, kind="stable")
    fs = np.take_along_axis(f, o, axis=1)
    sizes = np.take_along_axis(plan.unit_size.reshape(f.shape), o, axis=1)
    reached = np.cumsum(sizes, axis=1) >= rules.quorum
    any_ = reached.any(axis=1)
    at = np.where(any_, fs[np.arange(len(f)), reached.argmax(axis=1)], INF)
    need = math.ceil(rules.round_quorum * plan.groups - 1e-12)
    return float(np.partition(at, need - 1)[need - 1])


@dataclass
class _Close:
    """The server's reading of a timeline up to the round's close (what the passes need),
    and what :func:`_finish` turns into the rest of the :class:`ServerView`."""

    sat: np.ndarray
    first: np.ndarray
    t_close: float
    by: str
    retry: tuple[np.ndarray, ...]
    dv: np.ndarray
    dd: np.ndarray
    rank: np.ndarray
    fl: np.ndarray
    fn: np.ndarray
    real: np.ndarray
    allowed: np.ndarray
    latest: np.ndarray
    res: np.ndarray
    picked: np.ndarray  # indices into dv of the answers that count (rank < need)


def _close(
    rules: Rules, plan: PlanArrays, att: Attempts, tl: Timeline, deadline: float
) -> _Close:  # one pass over the round's rules; long because it is one decision table
    dv, dd, rank, picked, sat, first = _answers(plan, tl, att)
    pick, dd_pick = dv[picked], dd[picked]
    ok = dd_pick <= deadline  # events at the deadline run before it closes
    first[first > deadline] = INF
    # failures seen by the server
    code = tl.code
    fl = np.nonzero((code == OFFLINE) | (code == CRASH))[0]
    fn = tl.notice[fl]
    sat_fl = sat[plan.unit[att.a[fl]]]
    real = fn < sat_fl  # else the assignment was already cancelled
    allowed = (att.no[fl] <= rules.max_retries) & (
        deadline - fn > rules.backoff_s + rules.min_remaining_s
    )
    latest = np.arange(plan.n)
    if len(att) > plan.n:
        np.maximum.at(latest, att.a[plan.n :], np.arange(plan.n, len(att)))
    # resolution time of each assignment, whatever the close
    res = sat[plan.unit]
    res[att.a[pick[ok]]] = dd_pick[ok]
    final = fl[real & ~allowed]
    is_latest_final = latest[att.a[final]] == final
    fa = att.a[final[is_latest_final]]
    res[fa] = np.minimum(res[fa], fn[real & ~allowed][is_latest_final])
    t_q = _quorum_time(rules, plan, first)
    t_c = float(res.max()) if rules.close_early and plan.n and np.isfinite(res).all() else INF
    t_close, by = deadline, "deadline"
    if t_q <= t_c and t_q <= deadline:
        t_close, by = t_q, "round_quorum"
    elif t_c <= deadline:
        t_close, by = t_c, "complete"
    if plan.n == 0:
        t_close, by = deadline - rules.deadline_s, "complete"
    send = fn + rules.backoff_s
    again = real & allowed & (send < np.minimum(sat_fl, t_close))
    # the time each failure was scheduled orders retries sent at the same instant
    fa_ = fl[again]
    pushed = np.where(code[fa_] == OFFLINE, att.arrive[fa_], tl.notice[fa_] - att.half[fa_])
    retry = (att.a[fa_], att.no[fa_] + 1, send[again], pushed)
    return _Close(
        sat, first, t_close, by, retry, dv, dd, rank, fl, fn, real, allowed, latest, res, picked
    )


def _finish(rules: Rules, plan: PlanArrays, att: Attempts, c: _Close) -> ServerView:
    """The statuses, attempt counts, accepted answers and leftovers at the close."""
    t_close, fl, fn, real, allowed, latest = c.t_close, c.fl, c.fn, c.real, c.allowed, c.latest
    status = np.full(plan.n, LATE if c.by == "deadline" else CANCELLED, dtype=np.int8)
    pend = fl[real & allowed & (fn <= t_close)]
    status[att.a[pend[latest[att.a[pend]] == pend]]] = FAILED  # waiting to be re-sent
    status[c.res <= t_close] = CANCELLED
    final = fl[real & ~allowed]
    is_latest_final = latest[att.a[final]] == final
    status[att.a[final[is_latest_final]][fn[real & ~allowed][is_latest_final] <= t_close]] = FAILED
    dd_pick = c.dd[c.picked]
    accepted = c.dv[c.picked][dd_pick <= t_close]  # t_close <= the deadline
    status[att.a[accepted]] = ANSWERED
    attempts = np.ones(plan.n, dtype=np.int64)
    if len(att) > plan.n:
        np.maximum.at(attempts, att.a[plan.n :], att.no[plan.n :])
    # results and failures the round did not use, up to its close (same-instant events
    # after the closing one still reach the closed round)
    sat_fl = c.sat[plan.unit[att.a[fl]]]
    ignored = int(((c.rank >= plan.need) & (c.dd <= t_close)).sum()) + int(
        ((fn >= sat_fl) & (fn <= t_close)).sum()
    )
    late = c.dv[c.dd > t_close]
    return ServerView(
        c.sat, c.first, t_close, c.by, status, attempts, accepted, c.retry, ignored, late
    )


def _draw_index(
    plan: PlanArrays, firsts: np.ndarray, a: np.ndarray, t: np.ndarray, pushed: np.ndarray
) -> np.ndarray:
    """Retries' draw positions: after the client's first requests of the round, in send
    order (at the same instant, in the order their failures were scheduled)."""
    cl = plan.client[a]
    o = np.lexsort((pushed, t, cl))
    _, pos = _groups(cl[o])
    out = np.empty(len(a), dtype=np.int64)
    out[o] = pos
    n_first = np.searchsorted(firsts, cl, side="right") - np.searchsorted(firsts, cl)
    return out + n_first


def simulate_round(
    fleet: Fleet, rules: Rules, plan: PlanArrays, keys: np.ndarray, t0: float,
    free_at: np.ndarray, drawn: FirstDraws | None = None,
) -> tuple[Attempts, Timeline, ServerView]:  # fmt: skip
    """Round from ``t0`` with devices busy until ``free_at``: its attempts, their timeline
    and the server's view, at the fixed point of device and server sides. After the first
    pass only the devices whose requests changed (one now kept where it was dropped or the
    other way round, retries) are recomputed: a device's timeline depends on nothing else;
    a request that ran to completion and is now wanted or not when done changes alone.
    ``drawn``: :func:`first_draws` of this round, when computed ahead."""
    deadline = t0 + rules.deadline_s
    fd = drawn or first_draws(fleet, rules, plan, keys)
    firsts, first = fd.firsts, send(fleet, fd.draws, t0)
    order, order_cl, arr = _arrival_order(first, fd.order)
    att, first_order, first_sorted = first, order, (order_cl, arr)
    cancel = np.full(plan.n, deadline)
    room = _Room(first)
    tl = room.timeline()
    timeline(rules, att, cancel, free_at, order, tl)
    retry_prev: tuple[np.ndarray, ...] = (np.zeros(0, np.int64),) * 2 + (np.zeros(0),) * 2
    touched = np.zeros(len(free_at), dtype=bool)
    for _ in range(MAX_PASSES):
        view = _close(rules, plan, att, tl, deadline)
        new_cancel = np.minimum(view.sat[plan.unit], view.t_close)
        same_retry = all(np.array_equal(x, y) for x, y in zip(view.retry, retry_prev))
        moved, flips = _cancel_effects(att, tl, cancel, new_cancel)
        if same_retry and not len(moved) and not len(flips):
            return att, tl, _finish(rules, plan, att, view)
        cancel = new_cancel
        tl.recancel(att, flips, cancel)
        touched[att.cl[moved]] = True
        if not same_retry:
            touched[plan.client[retry_prev[0]]] = True
            retry_prev = view.retry
            ra, rno, rt, rp = view.retry
            touched[plan.client[ra]] = True
            more = make_attempts(
                fleet, rules, plan, keys, ra, rno, rt, _draw_index(plan, firsts, ra, rt, rp)
            )
            att, tl = room.with_retries(more, tl)
            order = _merged(first_sorted, first_order, more)
            order_cl = att.cl[order]
        rows = order[touched[order_cl]]
        timeline(rules, att, cancel, free_at, rows, tl)
        touched[att.cl[rows]] = False
    raise RuntimeError(f"vectorised round from t={t0} did not settle in {MAX_PASSES} passes")


@dataclass
class FirstDraws:
    """A round's first sends before they are sent (:func:`first_draws`)."""

    firsts: np.ndarray  # the plan's clients, sorted
    draws: Draws
    order: np.ndarray  # by client, then uplink seconds, then index


def first_draws(fleet: Fleet, rules: Rules, plan: PlanArrays, keys: np.ndarray) -> FirstDraws:
    """Every assignment's first send (a client's requests draw in plan order), before it is
    sent (pure: safe off the main thread)."""
    o = sorted_by(plan.client)
    firsts = plan.client[o]
    rank0 = np.empty(plan.n, dtype=np.int64)
    rank0[o] = _groups(firsts)[1]
    ones = np.ones(plan.n, np.int64)
    d = draw_attempts(fleet, rules, plan, keys, np.arange(plan.n), ones, rank0)
    return FirstDraws(firsts, d, sorted_by(d.cl, d.uplink))


def _arrival_order(att: Attempts, by_uplink: np.ndarray) -> tuple[np.ndarray, ...]:
    """``sorted_by(att.cl, att.arrive)`` for first sends (one send time), with the clients
    and arrivals in that order, from their order by uplink seconds: the same, unless adding
    the send time rounded two arrivals on one device to equal ones out of index order."""
    o = by_uplink
    c, a = att.cl[o], att.arrive[o]
    if ((c[1:] == c[:-1]) & (a[1:] == a[:-1]) & (o[1:] < o[:-1])).any():
        o = sorted_by(att.cl, att.arrive)
        c, a = att.cl[o], att.arrive[o]
    return o, c, a


def _cancel_effects(
    att: Attempts, tl: Timeline, old: np.ndarray, new: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What new cancel times change: the attempts now kept where they were dropped or the
    other way round (their devices' queues change), and those that ran to completion and
    are now wanted or not when done (only their own fate changes)."""
    changed = old != new
    if not changed.any():
        return (np.zeros(0, dtype=np.int64),) * 2
    rows = np.nonzero(changed[att.a])[0]
    ca = att.a[rows]
    c_old, c_new, at = old[ca], new[ca], tl.at[rows]
    moved = (c_old >= at) != (c_new >= at)
    code, done = tl.code[rows], tl.done[rows]
    ran = (code == DONE) | (code == DONE_CANCELLED)
    flips = ran & ~moved & ((c_old >= done) != (c_new >= done))
    return rows[moved], rows[flips]


def _merged(
    first_sorted: tuple[np.ndarray, np.ndarray], first_order: np.ndarray, more: Attempts
) -> np.ndarray:
    """The order by device, then arrival, then index, of the first sends followed by
    ``more`` (``first_order`` is that of the first sends, ``first_sorted`` their devices and
    arrivals in that order): the few retries merged in."""
    n = len(first_order)
    if not len(more):
        return first_order
    mo = np.lexsort((more.arrive, more.cl))
    cl_s, arr_s = first_sorted
    mc, ma = more.cl[mo], more.arrive[mo]
    lo = np.searchsorted(cl_s, mc, side="left")
    hi = np.searchsorted(cl_s, mc, side="right")
    ins = lo.copy()
    for d in range(int((hi - lo).max())):  # first attempts on the same device arriving no later
        j = lo + d
        ins += (j < hi) & (arr_s[np.minimum(j, n - 1)] <= ma)
    return np.insert(first_order, ins, mo + n)


class _Room:
    """The round's attempts, first sends then the current retries, in buffers with room for
    more retries: a new set of retries is written over the old one in place."""

    def __init__(self, first: Attempts) -> None:
        self.first, self.n = first, len(first)
        self.cap = max(64, self.n // 16)  # retries are a few % of the sends
        self._att: list[np.ndarray] = []  # allocated at the first retries
        empty = Timeline.empty(self.n + self.cap)
        self._tl = [getattr(empty, f) for f in TL_FIELDS]

    def timeline(self) -> Timeline:
        """The first sends' timeline rows (in the buffers: no copy when retries come)."""
        return Timeline(*(buf[: self.n] for buf in self._tl))

    def with_retries(self, more: Attempts, tl: Timeline) -> tuple[Attempts, Timeline]:
        n, m = self.n, len(more)
        if m > self.cap:  # reallocate, keeping the first sends' timeline rows
            self.cap = 2 * m
            self._tl = [_grown(getattr(tl, f)[:n], n + self.cap) for f in TL_FIELDS]
            self._att = []
        if not self._att:  # the first sends copied once, retries written after them
            self._att = [_grown(getattr(self.first, f), n + self.cap) for f in _ATT_FIELDS]
        for buf, f in zip(self._att, _ATT_FIELDS):
            buf[n : n + m] = getattr(more, f)
        return (
            Attempts(*(buf[: n + m] for buf in self._att)),
            Timeline(*(buf[: n + m] for buf in self._tl)),
        )


_ATT_FIELDS = tuple(Attempts.__dataclass_fields__)


def _grown(a: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, dtype=a.dtype)
    out[: len(a)] = a
    return out
