"""What a simulation run returns: :class:`SimResult` (per-round records, per-request rows,
totals), async :class:`StaleResult` s, and how a round's record is built and settled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedgrpo.rounds import Assignment, AssignmentStatus, RoundOutcome
from fedgrpo.sim.config import SimConfig
from fedgrpo.sim.events import RoundRun

__all__ = ["SimResult", "StaleResult", "round_record", "settle_records"]


@dataclass(frozen=True)
class StaleResult:
    """An async-mode result used in a later update than the round that asked for it."""

    origin_round: int
    used_in_round: int
    assignment: Assignment
    values: tuple[float, ...]

    @property
    def staleness(self) -> int:
        return self.used_in_round - self.origin_round


@dataclass
class SimResult:
    """Per-round records (dicts, JSON-ready), optional per-request rows, and run totals."""

    config: SimConfig
    seed: int
    rounds: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    wall_s: float
    events: int
    stale: list[StaleResult] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        """Scoring requests a device computed to completion."""
        return sum(r["evals"] for r in self.rounds)

    def column(self, key: str) -> list[Any]:
        return [r[key] for r in self.rounds]

    def participation(self) -> dict[str, dict[str, int]]:
        """profile → {asked, answered} over the run."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rounds:
            for prof, d in r["participation"].items():
                agg = out.setdefault(prof, {"asked": 0, "answered": 0})
                agg["asked"] += d["asked"]
                agg["answered"] += d["answered"]
        return out

    def summary(self) -> dict[str, Any]:
        dur = np.array(self.column("duration_s"), dtype=float)
        cov = np.array(self.column("coverage_mean"), dtype=float)
        return {
            "rounds": len(self.rounds),
            "clients": len(self.config.clients),
            "virtual_s": float(self.rounds[-1]["t_close"]) if self.rounds else 0.0,
            "round_duration_p50_s": float(np.median(dur)) if dur.size else 0.0,
            "round_duration_p90_s": float(np.quantile(dur, 0.9)) if dur.size else 0.0,
            "coverage_mean": float(cov.mean()) if cov.size else 0.0,
            "evaluations": self.evaluations,
            "wasted_device_s": float(sum(self.column("wasted_device_s"))),
            "bytes_sent": int(sum(self.column("bytes_sent"))),
            "bytes_received": int(sum(self.column("bytes_received"))),
            "wall_s": self.wall_s,
            "events": self.events,
        }


def _participation(out: RoundOutcome, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """profile → {asked, answered} in one round (assignments never sent are not counted)."""
    part: dict[str, dict[str, int]] = {}
    answered = AssignmentStatus.ANSWERED
    for a, st, n in zip(out.plan.assignments, out.statuses, out.attempt_counts):
        if n == 0:
            continue
        d = part.get(names[a.client_id])
        if d is None:
            d = part[names[a.client_id]] = {"asked": 0, "answered": 0}
        d["asked"] += 1
        if st is answered:
            d["answered"] += 1
    return part


def round_record(
    rr: RoundRun, out: RoundOutcome, names: Sequence[str], stale_used: Sequence[StaleResult],
    stale_dropped: int,
) -> dict[str, Any]:  # fmt: skip
    """Round ``rr``'s record at its close (``names``: each client's profile name)."""
    counts = out.counts()
    cov = out.coverage
    return {
        "round": rr.index,
        "t_start": out.t_start,
        "t_close": out.t_close,
        "duration_s": out.duration_s,
        "closed_by": out.closed_by,
        "groups": out.plan.num_groups,
        **counts,
        "crashed": rr.crashed,
        "offline": rr.offline,
        "evals": rr.evals,
        "wasted_device_s": rr.wasted_s,
        "bytes_sent": rr.bytes_sent,
        "bytes_received": rr.bytes_received,
        "coverage_mean": float(cov.mean()) if cov.size else 1.0,
        "coverage": [round(float(c), 4) for c in cov],
        "groups_with_signal": int(out.has_signal.sum()),
        "participation": _participation(out, names),
        "stale_used": len(stale_used),
        "stale_dropped": stale_dropped,
        "staleness_mean": (
            float(np.mean([s.staleness for s in stale_used])) if stale_used else None
        ),
    }


def settle_records(runs: Sequence[RoundRun], records: Sequence[dict[str, Any]]) -> None:
    """Counters that keep moving after a round closed (stragglers finishing later)."""
    for rr, rec in zip(runs, records):
        rec.update(
            crashed=rr.crashed,
            offline=rr.offline,
            late_arrivals=rr.late_arrivals,
            evals=rr.evals,
            busy_device_s=rr.busy_s,
            wasted_device_s=rr.wasted_s,
            bytes_sent=rr.bytes_sent,
            bytes_received=rr.bytes_received,
        )
