"""A vectorised round's record (the keys and meaning of :func:`fedgrpo.sim.result.round_record`
after :func:`~fedgrpo.sim.result.settle_records`) and, for tests, its rewards grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedgrpo.sim.rewards import RoundInput
from fedgrpo.sim.rng import round_keys, uniform_at
from fedgrpo.sim.vround import (
    CRASH,
    DONE,
    DONE_CANCELLED,
    LOST,
    OFFLINE,
    OFFLINE_MID,
    Attempts,
    PlanArrays,
    Timeline,
    _groups,
)
from fedgrpo.sim.vserver import ANSWERED, CANCELLED, FAILED, LATE, ServerView

__all__ = ["RoundArrays", "rewards_grid", "vector_record"]


@dataclass
class RoundArrays:
    index: int
    t_start: float
    plan: PlanArrays
    att: Attempts
    tl: Timeline
    view: ServerView
    quorum: int


def _participation(
    ra: RoundArrays, profile_idx: np.ndarray, names: Sequence[str]
) -> dict[str, dict[str, int]]:
    asked = ra.view.attempts > 0
    prof = profile_idx[ra.plan.client]
    ans = asked & (ra.view.status == ANSWERED)
    out: dict[str, dict[str, int]] = {}
    if not asked.any():
        return out
    p_asked = prof[asked]
    n_asked = np.bincount(p_asked, minlength=len(names))
    n_ans = np.bincount(prof[ans], minlength=len(names))
    present = np.nonzero(n_asked)[0].tolist()
    first = [int(np.argmax(p_asked == pi)) for pi in present]
    for _, pi in sorted(zip(first, present)):  # first-asked order, as the event engine
        out[names[pi]] = {"asked": int(n_asked[pi]), "answered": int(n_ans[pi])}
    return out


def _coverage(ra: RoundArrays) -> tuple[np.ndarray, np.ndarray, int]:
    """Per group: filled answer slots and rewarded candidates; the slots a group wants."""
    p, v = ra.plan, ra.view
    n_units = len(p.unit_size)
    count = np.bincount(p.unit[ra.att.a[v.accepted]], minlength=n_units)
    got = (p.unit_size * np.minimum(count, p.need)).reshape(p.groups, p.units_per_group)
    rew = (p.unit_size * (count > 0)).reshape(got.shape)
    filled, rewarded = got[:, 0].copy(), rew[:, 0].copy()
    for u in range(1, p.units_per_group):  # a few columns: faster than sum(axis=1)
        filled += got[:, u]
        rewarded += rew[:, u]
    return filled, rewarded, p.group_size * p.need


def _rounded(filled: np.ndarray, wanted: int) -> list[float]:
    """``[round(float(c), 4) for c in filled / wanted]`` (the event engine's), once per value."""
    if wanted <= 0:
        return [1.0] * len(filled)
    table = np.array([round(float(np.float64(g) / wanted), 4) for g in range(wanted + 1)])
    out: list[float] = table[filled].tolist()
    return out


def vector_record(ra: RoundArrays, profile_idx: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    v, tl, att = ra.view, ra.tl, ra.att
    st, n_att = v.status, v.attempts
    code = tl.code
    filled, rewarded, wanted = _coverage(ra)
    cov = filled / wanted if wanted > 0 else np.ones(len(filled))
    started = (code == CRASH) | (code == OFFLINE_MID) | (code == DONE) | (code == DONE_CANCELLED)
    delivered = code == DONE
    not_used = delivered.copy()
    not_used[v.accepted] = False
    wasted = float(
        tl.spent[(code == CRASH) | (code == OFFLINE_MID) | (code == DONE_CANCELLED)].sum()
    )
    wasted += float(att.compute[not_used].sum())
    return {
        "round": ra.index,
        "t_start": ra.t_start,
        "t_close": v.t_close,
        "duration_s": v.t_close - ra.t_start,
        "closed_by": v.closed_by,
        "groups": ra.plan.groups,
        "asked": int((n_att > 0).sum()),
        "answered": int((st == ANSWERED).sum()),
        "failed": int((st == FAILED).sum()),
        "cancelled": int((st == CANCELLED).sum()),
        "late": int((st == LATE).sum()),
        "retried": int((n_att > 1).sum()),
        "retries": int((n_att - 1)[n_att > 1].sum()),
        "ignored": v.ignored,
        "crashed": int((code == CRASH).sum()),
        "offline": int(((code == OFFLINE) | (code == LOST) | (code == OFFLINE_MID)).sum()),
        "evals": int(((code == DONE) | (code == DONE_CANCELLED)).sum()),
        "wasted_device_s": wasted,
        "bytes_sent": int(att.req.sum() - att.req[code == OFFLINE].sum()),
        "bytes_received": int(att.resp[delivered].sum()),
        "coverage_mean": float(cov.mean()) if cov.size else 1.0,
        "coverage": _rounded(filled, wanted),
        "groups_with_signal": int((rewarded >= ra.quorum).sum()),
        "participation": _participation(ra, profile_idx, names),
        "stale_used": 0,
        "stale_dropped": 0,
        "staleness_mean": None,
        "late_arrivals": len(v.late),
        "busy_device_s": float(tl.spent[started].sum()),
    }


def rewards_grid(
    ra: RoundArrays, cands: np.ndarray, inp: RoundInput,
    competence: Callable[[str], np.ndarray], r: int, seed: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The round's ``[groups, G, need]`` rewards and experts grids (as
    :class:`fedgrpo.rounds.RoundOutcome`): the surrogate judge of
    :class:`fedgrpo.sim.rewards.CompetenceRewards`, one draw of the client's ``reward`` stream
    per candidate, in the order its requests finished."""
    p, att, tl = ra.plan, ra.att, ra.tl
    drew = np.nonzero(tl.code == DONE)[0]
    cl = p.client[att.a[drew]]
    o = np.lexsort((tl.done[drew], cl))
    drew, cl = drew[o], cl[o]
    k = p.k[att.a[drew]]
    gid, _ = _groups(cl)
    csum = np.cumsum(k) - k
    offset = csum - csum[np.searchsorted(gid, gid)]  # draws before it by the same client
    off_of = dict(zip(drew.tolist(), offset.tolist()))
    rewards = np.full((p.groups, p.group_size, p.need), np.nan)
    experts = np.full(rewards.shape, -1, dtype=np.int64)
    acc = ra.view.accepted
    units = p.unit[att.a[acc]]
    _, slot = _groups(units)
    for j, u, s in zip(acc.tolist(), units.tolist(), slot.tolist()):
        a = int(att.a[j])
        c = int(p.client[a])
        q = u // p.units_per_group
        row = cands[u][cands[u] >= 0]
        key = round_keys(seed, r, np.array([c]), "reward")
        us = uniform_at(np.repeat(key, len(row)), off_of[j] + np.arange(len(row)))
        pc = float(competence(inp.domains[q])[c])
        judged = us < pc
        truth = inp.correct[q, row] if inp.correct is not None else np.ones(len(row), bool)
        rewards[q, row, s] = np.where(truth == judged, 1.0, 0.0)
        experts[q, row, s] = c
    return rewards, experts
