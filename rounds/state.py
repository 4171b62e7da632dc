"""The state machine of one round: drivers report sends, results, failures and the deadline
with the current time; it decides what counts, what to retry, what to cancel and when the
round closes (the lifecycle is in :mod:`fedgrpo.rounds`). Pure: nothing blocks, nothing reads
a clock."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from fedgrpo.errors import ConfigError
from fedgrpo.rounds.outcome import (
    AssignmentLog,
    AssignmentStatus,
    Disposition,
    Ignored,
    RoundOutcome,
    grids_from_flat,
)
from fedgrpo.rounds.plan import Assignment, RoundPlan
from fedgrpo.rounds.policy import RoundPolicy, validate_values

__all__ = ["RoundState"]

# Aliases for the hot paths: ``AssignmentStatus.PENDING`` is a lookup through the enum's
# metaclass (~70 ns), a module global ~5 ns, and a round makes tens of them per request.
_PENDING = AssignmentStatus.PENDING
_IN_FLIGHT = AssignmentStatus.IN_FLIGHT
_ANSWERED = AssignmentStatus.ANSWERED
_FAILED = AssignmentStatus.FAILED
_CANCELLED = AssignmentStatus.CANCELLED
_LATE = AssignmentStatus.LATE
_ACCEPTED = Disposition.ACCEPTED


class RoundState:
    """Mutable state of one round. Drivers call ``on_*`` with the current time; they send
    whatever is ``pending()``, cancel whatever :meth:`to_cancel` returns, and stop at
    :meth:`is_closed`. Nothing here ever blocks or looks at a clock.

    Storage is flat (one list per field, candidates addressed by ``group offset + c``) so that
    a round with thousands of groups costs few allocations."""

    def __init__(self, plan: RoundPlan, policy: RoundPolicy, t_start: float) -> None:
        self.plan = plan
        self.policy = policy
        self.t_start = float(t_start)
        self.deadline = self.t_start + policy.deadline_s
        assignments = plan.assignments
        n = len(assignments)
        self._assignments = assignments
        self._by_id = plan.by_id
        self._status = [_PENDING] * n
        self._attempts = [0] * n
        self._first_sent: list[float | None] = [None] * n
        self._last_sent: list[float | None] = [None] * n
        self._resolved_at: list[float | None] = [None] * n
        self._failures: dict[int, list[str]] = {}
        self._used = [0] * n
        self._unresolved = n
        self._init_candidates(plan)
        self._init_groups(plan, policy)
        self._cancel_queue: list[Assignment] = []
        self._ignored: list[Ignored] = []
        self._closed_at: float | None = None
        self._closed_by = ""
        # A round with nothing to ask is complete at once; a group that wants no answers
        # (G = 0) is trivially at quorum only if quorum is 0, which the policy forbids.
        if self._unresolved == 0 and policy.close_early:
            self._close(self.t_start, "complete", _CANCELLED)

    # ----------------------------------------------------------------- queries

    def is_closed(self) -> bool:
        return self._closed_at is not None

    @property
    def closed_by(self) -> str:
        return self._closed_by

    def status(self, assignment_id: Assignment | str) -> AssignmentStatus:
        return self._status[self._index(assignment_id)]

    def attempts(self, assignment_id: Assignment | str) -> int:
        return self._attempts[self._index(assignment_id)]

    def used(self, assignment_id: Assignment | str) -> int:
        """How many of the assignment's values counted (0 unless answered; less if surplus)."""
        return self._used[self._index(assignment_id)]

    def pending(self) -> list[Assignment]:
        """Assignments waiting to be sent (first time or retry); empty once closed."""
        if self.is_closed():
            return []
        return [a for a in self.plan.assignments if self._status[a.index] is _PENDING]

    def outstanding(self) -> list[Assignment]:
        """Assignments pending or in flight."""
        return [a for a in self.plan.assignments if not self._status[a.index].resolved]

    def to_cancel(self) -> list[Assignment]:
        """Work in progress that is no longer needed (over-selected extras whose candidates are
        covered, everything outstanding at the close). Returns what became cancellable since
        the previous call (each assignment once)."""
        out, self._cancel_queue = self._cancel_queue, []
        return out

    def remaining_s(self, t: float) -> float:
        """Seconds left before the deadline (>= 0)."""
        return max(0.0, self.deadline - t)

    # ----------------------------------------------------------------- events

    def on_sent(self, assignment: Assignment | str, t: float) -> None:
        i = self._index(assignment)
        if self._closed_at is not None:
            raise ConfigError(
                f"assignment {self.plan.assignments[i].assignment_id!r} sent after the round closed; "
                "drivers must stop sending once is_closed()"
            )
        if self._status[i] is not _PENDING:
            raise ConfigError(
                f"assignment {self._assignments[i].assignment_id!r} is {self._status[i].value}; "
                "only pending assignments may be sent"
            )
        self._status[i] = _IN_FLIGHT
        self._attempts[i] += 1
        if self._first_sent[i] is None:
            self._first_sent[i] = t
        self._last_sent[i] = t

    def on_result(self, assignment_id: str, values: Sequence[float], t: float) -> Disposition:
        """Take a result: count it, or say why not (see :class:`Disposition`)."""
        a = self._by_id.get(assignment_id)
        if a is None:
            self._ignore(t, assignment_id, Disposition.UNKNOWN, "not in this round's plan", values)
            return Disposition.UNKNOWN
        idx = a.index
        status = self._status[idx]
        # Fast path: an in-flight answer before the close needs none of _screen's checks.
        if status is not _IN_FLIGHT or self._closed_at is not None or t > self.deadline:
            rejected = self._screen(a, assignment_id, status, values, t)
            if rejected is not None:
                return rejected
        cands = a.candidates
        problem = validate_values(values, len(cands), self.policy.reward_range)
        if problem is not None:
            self._ignore(t, assignment_id, Disposition.INVALID, problem, None)
            retry = self._fail(idx, f"invalid: {problem}", t, allow_retry=self.policy.retry_invalid)
            return Disposition.RETRY if retry else Disposition.INVALID
        # Accept (also from the pending state: a reply to an earlier attempt is still valid).
        self._resolve(idx, _ANSWERED, t)
        q, client = a.group, a.client_id
        base, used = self._offset[q], 0
        got_all, need, slots = self._got, self._need, self._slots
        val, who, rewarded = self._val, self._who, self._rewarded
        satisfied: list[int] = []
        for c, v in zip(cands, values):
            k = base + c
            got = got_all[k]
            if got >= need[k]:
                continue  # surplus: the first `need` answers per candidate count
            j = k * slots + got
            val[j] = float(v)
            who[j] = client
            got += 1
            got_all[k] = got
            used += 1
            if got == 1:
                rewarded[q] += 1
                if rewarded[q] == self._quorum:
                    self._groups_at_quorum += 1
            if got == need[k]:
                satisfied.append(c)
        if satisfied:
            self._cancel_covered(q, satisfied, t, cands if len(satisfied) == len(cands) else None)
        self._used[idx] = used
        if used < len(cands):
            self._ignore(t, assignment_id, "surplus", f"{len(cands) - used} surplus values")
        self._check_close(t)
        return _ACCEPTED

    def on_failure(self, assignment_id: str, reason: str, t: float) -> bool:
        """Record a failed attempt; True if the driver should re-send (same request id)."""
        a = self._by_id.get(assignment_id)
        if a is None:
            self._ignore(t, assignment_id, Disposition.UNKNOWN, reason)
            return False
        idx = a.index
        if self._closed_at is not None or self._status[idx] is not _IN_FLIGHT:
            self._ignore(t, assignment_id, "failure_ignored", reason)
            return False
        if t > self.deadline:
            self.on_deadline(t)
            self._ignore(t, assignment_id, "failure_ignored", reason)
            return False
        return self._fail(idx, reason, t, allow_retry=True)

    def on_deadline(self, t: float) -> None:
        """The deadline passed: close; whatever is in flight is late."""
        if not self.is_closed():
            self._close(max(t, self.t_start), "deadline", _LATE)

    def close(self, t: float, reason: str = "closed") -> None:
        """Close now (driver-initiated, e.g. shutdown); outstanding work is cancelled."""
        if not self.is_closed():
            self._close(t, reason, _CANCELLED)

    def outcome(self) -> RoundOutcome:
        """The round's result; call after :meth:`is_closed` (before, it is a snapshot)."""
        p = self.plan
        rewards, experts = grids_from_flat(p, self._val, self._who, self._slots, self._offset)
        log = AssignmentLog(
            tuple(self._status),
            tuple(self._attempts),
            tuple(self._first_sent),
            tuple(self._last_sent),
            tuple(self._resolved_at),
            {i: tuple(f) for i, f in self._failures.items()},
            tuple(self._used),
        )
        t_close = self._closed_at if self._closed_at is not None else self.t_start
        return RoundOutcome(
            p,
            self.policy,
            self.t_start,
            t_close,
            self._closed_by or "open",
            rewards,
            experts,
            tuple(self._ignored),
            log,
        )

    # ----------------------------------------------------------------- internals

    def _index(self, assignment: Assignment | str) -> int:
        if isinstance(assignment, str):
            key = assignment
        else:
            i = assignment.index
            plan_a = self._assignments
            if 0 <= i < len(plan_a) and plan_a[i] is assignment:
                return i  # the plan's own object: no lookup needed
            key = assignment.assignment_id
        a = self._by_id.get(key)
        if a is None:
            raise ConfigError(f"assignment {key!r} is not in round {self.plan.round_id!r}")
        return a.index

    def _init_candidates(self, plan: RoundPlan) -> None:
        """Flat per-candidate storage: candidate (q, c) ↔ slot ``offset[q] + c``."""
        offset = [0] * len(plan.num_candidates)
        total = 0
        for q, g in enumerate(plan.num_candidates):
            offset[q] = total
            total += g
        self._offset = offset
        self._need = [k for row in plan.need for k in row]
        self._got = [0] * total  # counted answers per candidate
        # counted answers: slot s of candidate k at [k * slots + s] (NaN / -1 = missing)
        self._slots = slots = max(self._need, default=0)
        self._val = [math.nan] * (total * slots)
        self._who = [-1] * (total * slots)

    def _init_groups(self, plan: RoundPlan, policy: RoundPolicy) -> None:
        """Per-group bookkeeping: who asks each group, what still wants answers, quorum."""
        # group → assignments asking it (plan order); per assignment, how many of its
        # candidates still want answers (0 → no longer needed → cancel)
        members: list[list[int]] = [[] for _ in range(plan.num_groups)]
        for a in plan.assignments:
            members[a.group].append(a.index)
        self._members = members
        self._open_cands = [len(a.candidates) for a in plan.assignments]
        self._rewarded = [0] * plan.num_groups
        self._groups_at_quorum = 0
        self._quorum = policy.quorum
        # groups at quorum that close the round early (None: no round quorum), computed once
        # because _check_close runs after every result
        rq = policy.round_quorum
        self._groups_for_quorum = (
            rq * plan.num_groups - 1e-12 if rq is not None and plan.num_groups > 0 else None
        )

    def _screen(
        self,
        a: Assignment,
        assignment_id: str,
        status: AssignmentStatus,
        values: Sequence[float],
        t: float,
    ) -> Disposition | None:
        """Why a result for ``a`` (now ``status``) cannot count — it is a duplicate, late, for
        a cancelled or never-sent assignment — or None if it may (once its values check)."""
        if status is _ANSWERED:
            self._ignore(t, assignment_id, Disposition.DUPLICATE, "", values)
            return Disposition.DUPLICATE
        if self._closed_at is not None or t > self.deadline:
            if self._closed_at is None:
                self.on_deadline(t)
            self._ignore(t, assignment_id, Disposition.LATE, f"status {status.value}", values)
            return Disposition.LATE
        if status is _CANCELLED:
            self._ignore(t, assignment_id, Disposition.CANCELLED, "", values)
            return Disposition.CANCELLED
        if self._attempts[a.index] == 0:
            self._ignore(t, assignment_id, Disposition.UNKNOWN, "never sent", values)
            return Disposition.UNKNOWN
        return None

    def _ignore(
        self,
        t: float,
        assignment_id: str,
        kind: str,
        detail: str,
        values: Iterable[float] | None = None,
    ) -> None:
        vals: tuple[float, ...] | None = None
        if values is not None:
            try:
                vals = tuple(float(v) for v in values)
            except (TypeError, ValueError):
                vals = None
        self._ignored.append(
            Ignored(t, assignment_id, str(getattr(kind, "value", kind)), detail, vals)
        )

    def _resolve(self, idx: int, status: AssignmentStatus, t: float) -> None:
        st = self._status[idx]
        if st is _PENDING or st is _IN_FLIGHT:
            self._unresolved -= 1
        self._status[idx] = status
        self._resolved_at[idx] = t

    def _fail(self, idx: int, reason: str, t: float, allow_retry: bool) -> bool:
        self._failures.setdefault(idx, []).append(reason)
        p = self.policy
        retry = (
            allow_retry
            and self._attempts[idx] <= p.max_retries
            and self.deadline - t > p.retry_backoff_s + p.retry_min_remaining_s
        )
        if retry:
            self._status[idx] = _PENDING
            return True
        self._resolve(idx, _FAILED, t)
        self._check_close(t)
        return False

    def _cancel_covered(
        self, group: int, cands: list[int], t: float, whole: tuple[int, ...] | None = None
    ) -> None:
        """``cands`` of ``group`` just got all the answers they want: an outstanding
        assignment none of whose candidates still wants answers is no longer needed.
        ``whole``: the answering shard when ``cands`` is all of it (in order)."""
        open_cands = self._open_cands
        assignments = self._assignments
        for idx in self._members[group]:
            mine = assignments[idx].candidates
            if mine is whole:  # the same shard object (the answerer, an over-selected mirror)
                hit = len(mine)
            else:
                hit = 0
                for c in mine:
                    if c in cands:
                        hit += 1
            if not hit:
                continue
            left = open_cands[idx] - hit  # each candidate is satisfied once: never < 0
            open_cands[idx] = left
            if left == 0:
                st = self._status[idx]
                if st is _IN_FLIGHT:
                    self._resolve(idx, _CANCELLED, t)
                    self._cancel_queue.append(assignments[idx])
                elif st is _PENDING:
                    self._resolve(idx, _CANCELLED, t)

    def _check_close(self, t: float) -> None:
        if self._closed_at is not None:
            return
        enough = self._groups_for_quorum
        if enough is not None and self._groups_at_quorum >= enough:
            self._close(t, "round_quorum", _CANCELLED)
        elif self._unresolved == 0 and self.policy.close_early:
            self._close(t, "complete", _CANCELLED)

    def _close(self, t: float, reason: str, outstanding_as: AssignmentStatus) -> None:
        self._closed_at = t
        self._closed_by = reason
        for a in self.plan.assignments:
            st = self._status[a.index]
            if st is _IN_FLIGHT:
                self._resolve(a.index, outstanding_as, t)
                self._cancel_queue.append(a)
            elif st is _PENDING:
                # Never sent, or waiting to be re-sent after a failure.
                final = _FAILED if self._attempts[a.index] else _CANCELLED
                self._resolve(a.index, final, t)
