"""What a round produced: the final status of each assignment, what was done with each
result (:class:`Disposition`), the results the round did not use (:class:`Ignored`), the
per-assignment bookkeeping (:class:`AssignmentLog`, :class:`AssignmentReport`) and the
rewards grid with its queries (:class:`RoundOutcome`)."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from fedgrpo.errors import ConfigError
from fedgrpo.rounds.plan import Assignment, RoundPlan
from fedgrpo.rounds.policy import RoundPolicy

__all__ = [
    "AssignmentLog",
    "AssignmentReport",
    "AssignmentStatus",
    "Disposition",
    "Ignored",
    "RoundOutcome",
    "grids_from_flat",
]


class AssignmentStatus(str, enum.Enum):
    PENDING = "pending"  # not sent yet, or waiting to be re-sent after a failure
    IN_FLIGHT = "in_flight"
    ANSWERED = "answered"
    FAILED = "failed"  # failed and no retry left (or no time left to retry)
    CANCELLED = "cancelled"  # no longer needed (over-selection, early close) or never sent
    LATE = "late"  # still outstanding when the deadline hit

    @property
    def resolved(self) -> bool:
        return self not in (AssignmentStatus.PENDING, AssignmentStatus.IN_FLIGHT)


class Disposition(str, enum.Enum):
    """What :meth:`RoundState.on_result` did with a result."""

    ACCEPTED = "accepted"
    RETRY = "retry"  # invalid; the driver should re-send (same request id)
    INVALID = "invalid"  # invalid; no retry
    DUPLICATE = "duplicate"
    LATE = "late"  # arrived after the close
    CANCELLED = "cancelled"  # the assignment had been cancelled
    UNKNOWN = "unknown"  # id not in the plan


@dataclass(frozen=True)
class Ignored:
    """A result or failure the round did not use, and why."""

    t: float
    assignment_id: str
    kind: str  # Disposition value, or "failure_after_close"
    detail: str = ""
    values: tuple[float, ...] | None = None


@dataclass(frozen=True)
class AssignmentReport:
    assignment: Assignment
    status: AssignmentStatus
    attempts: int
    first_sent_at: float | None
    last_sent_at: float | None
    resolved_at: float | None
    failures: tuple[str, ...]
    used: int  # how many of its values counted (the rest were surplus)

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)

    @property
    def latency_s(self) -> float | None:
        """Last attempt's send → answer time (answered only)."""
        if self.status is not AssignmentStatus.ANSWERED or self.last_sent_at is None:
            return None
        assert self.resolved_at is not None
        return self.resolved_at - self.last_sent_at


@dataclass(frozen=True)
class AssignmentLog:
    """Per-assignment bookkeeping of a closed round, in plan order (the raw material of
    :attr:`RoundOutcome.assignments`, which materialises reports only when asked)."""

    status: tuple[AssignmentStatus, ...]
    attempts: tuple[int, ...]
    first_sent: tuple[float | None, ...]
    last_sent: tuple[float | None, ...]
    resolved_at: tuple[float | None, ...]
    failures: Mapping[int, tuple[str, ...]]  # plan index → failure reasons (absent: none)
    used: tuple[int, ...]


@dataclass(frozen=True)
class RoundOutcome:
    """What the round produced. ``rewards[q, c, s]`` = s-th counted expert answer for candidate
    c of group q (NaN = missing); ``experts`` holds who gave it (-1 = missing). Feed
    ``rewards[q]`` to :func:`server.grpo.rewards.combine`."""

    plan: RoundPlan
    policy: RoundPolicy
    t_start: float
    t_close: float
    closed_by: str  # "complete" | "round_quorum" | "deadline"
    rewards: np.ndarray
    experts: np.ndarray
    ignored: tuple[Ignored, ...]
    log: AssignmentLog = field(repr=False)

    @cached_property
    def assignments(self) -> tuple[AssignmentReport, ...]:
        """One report per planned assignment, in plan order (built on first access)."""
        lg = self.log
        failures = lg.failures
        return tuple(
            AssignmentReport(a, st, n, first, last, res, failures.get(i, ()), used)
            for i, (a, st, n, first, last, res, used) in enumerate(
                zip(
                    self.plan.assignments,
                    lg.status,
                    lg.attempts,
                    lg.first_sent,
                    lg.last_sent,
                    lg.resolved_at,
                    lg.used,
                )
            )
        )

    @property
    def statuses(self) -> tuple[AssignmentStatus, ...]:
        """Final status per planned assignment (plan order); cheaper than :attr:`assignments`."""
        return self.log.status

    @property
    def attempt_counts(self) -> tuple[int, ...]:
        """Attempts per planned assignment (plan order; 0 = never sent)."""
        return self.log.attempts

    @property
    def duration_s(self) -> float:
        return self.t_close - self.t_start

    @property
    def answers_per_candidate(self) -> np.ndarray:
        """[groups, G_max] number of counted answers."""
        return (~np.isnan(self.rewards)).sum(axis=2)

    @property
    def candidate_mask(self) -> np.ndarray:
        """[groups, G_max] True where a candidate has at least one reward."""
        return self.answers_per_candidate > 0

    @property
    def rewarded(self) -> np.ndarray:
        """[groups] number of rewarded candidates."""
        return self.candidate_mask.sum(axis=1)

    @property
    def has_signal(self) -> np.ndarray:
        """[groups] True when the group reached ``quorum`` rewarded candidates."""
        return self.rewarded >= self.policy.quorum

    @property
    def coverage(self) -> np.ndarray:
        """[groups] fraction of wanted (candidate, answer) slots that were filled (1.0 if none wanted)."""
        wanted = np.array([sum(n) for n in self.plan.need], dtype=np.float64)
        got = (~np.isnan(self.rewards)).sum(axis=(1, 2)).astype(np.float64)
        return np.divide(got, wanted, out=np.ones_like(got), where=wanted > 0)

    def usable_rewards(self) -> np.ndarray:
        """:attr:`rewards` with the groups that carry no signal blanked to NaN."""
        out = self.rewards.copy()
        out[~self.has_signal] = np.nan
        return out

    def rewards_by_expert(self, experts: Sequence[Sequence[int]]) -> np.ndarray:
        """[groups, G_max, E] with slot e = position of the expert in ``experts[q]`` (the
        trainer's layout; E = longest list). Answers from experts not listed raise."""
        p = self.plan
        e_max = max((len(x) for x in experts), default=0)
        out = np.full((p.num_groups, self.rewards.shape[1], max(e_max, 1)), np.nan)
        if len(experts) != p.num_groups:
            raise ConfigError(f"experts has {len(experts)} lists for {p.num_groups} groups")
        for q in range(p.num_groups):
            slot = {int(e): j for j, e in enumerate(experts[q])}
            for c, s in zip(*np.nonzero(self.experts[q] >= 0)):
                e = int(self.experts[q, c, s])
                if e not in slot:
                    raise ConfigError(f"expert {e} answered group {q} but is not in experts[{q}]")
                out[q, c, slot[e]] = self.rewards[q, c, s]
        return out

    def counts(self) -> dict[str, int]:
        """The round's counts -- THE definition every mode reports (sim, emulate, live,
        in-process); all count assignments (one expert × its candidates of one question):

        * ``asked``: assignments sent at least once (a retry re-sends the same assignment
          and is not counted again; see ``retries``);
        * ``answered``: assignments whose values were accepted;
        * ``failed``: gave up (no retry budget left, or invalid values);
        * ``cancelled``: no longer needed (over-selection satisfied, or cut at the close);
        * ``late``: still outstanding when the round closed;
        * ``retried`` / ``retries``: assignments sent more than once / total re-sends;
        * ``ignored``: results that arrived after the close, for a cancelled assignment, or
          twice (recorded, never used)."""
        status = self.log.status
        attempts = self.log.attempts
        return {
            "asked": sum(1 for n in attempts if n > 0),
            "answered": status.count(AssignmentStatus.ANSWERED),
            "failed": status.count(AssignmentStatus.FAILED),
            "cancelled": status.count(AssignmentStatus.CANCELLED),
            "late": status.count(AssignmentStatus.LATE),
            "retried": sum(1 for n in attempts if n > 1),
            "retries": sum(n - 1 for n in attempts if n > 1),
            "ignored": len(self.ignored),
        }


def grids_from_flat(
    plan: RoundPlan,
    val_flat: Sequence[float],
    who_flat: Sequence[int],
    stored_slots: int,
    offset: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """The ``[groups, G_max, slots]`` rewards and experts grids of :class:`RoundOutcome` from
    flat per-candidate storage (candidate (q, c) at row ``offset[q] + c``, ``stored_slots``
    answers per row; NaN / -1 = missing). Groups smaller than G_max are padded."""
    p = plan
    gmax = max(p.num_candidates, default=0)
    slots = p.slots
    total = sum(p.num_candidates)  # candidates (rows) in the flat storage
    val = np.array(val_flat, dtype=np.float64).reshape(total, stored_slots)[:, :slots]
    who = np.array(who_flat, dtype=np.int64).reshape(total, stored_slots)[:, :slots]
    if all(g == gmax for g in p.num_candidates):
        return val.reshape(p.num_groups, gmax, slots), who.reshape(p.num_groups, gmax, slots)
    rewards = np.full((p.num_groups, gmax, slots), np.nan, dtype=np.float64)
    experts = np.full((p.num_groups, gmax, slots), -1, dtype=np.int64)
    sizes = np.asarray(p.num_candidates, dtype=np.intp)
    q_of = np.repeat(np.arange(p.num_groups), sizes)
    c_of = np.arange(total) - np.repeat(np.asarray(offset, dtype=np.intp), sizes)
    rewards[q_of, c_of] = val
    experts[q_of, c_of] = who
    return rewards, experts
