"""Semantics of one reward-gathering round — the ONE implementation, driven by two clocks.

Pure: no I/O, no clock, no asyncio, no simpy, no randomness. Time is a float the driver
passes in (``time.monotonic()`` for the asyncio gatherer in :mod:`fedgrpo.server.gathering.http`, ``env.now``
for the simpy process in :mod:`fedgrpo.sim`); only the waiting differs between them.

Vocabulary
----------
* A **group** is one question with its G candidate completions.
* An **assignment** asks one expert client to score some candidates of one group. Its id is the
  idempotent request id: a retry re-sends the same id.
* ``need[q][c]`` = how many expert answers candidate ``c`` of group ``q`` wants (1 with
  ``split`` dispatch, M with ``broadcast``). The first ``need`` accepted answers per candidate
  count; later ones are *surplus* and ignored.
* **Over-selection** (factor f): ⌈M·(1+f)⌉ experts are asked per question instead of M. The
  extra experts mirror the primaries' candidate shards round-robin. An outstanding assignment
  all of whose candidates are already satisfied is cancelled (:meth:`RoundState.to_cancel`).
* A group with fewer than ``quorum`` rewarded candidates carries **no signal**.

Lifecycle of an assignment::

    pending --on_sent--> in_flight --on_result(valid)--> answered
                            |--on_failure / invalid--> pending (retry) | failed
                            |--not needed any more--> cancelled
                            '--still outstanding at the deadline--> late

Results that arrive after the close, for a cancelled assignment, or twice, are ignored and
recorded (:attr:`RoundOutcome.ignored`); invalid values (wrong length, NaN/inf, out of range)
count as a failure and are never trusted.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from fedgrpo.edge.protocol import ScoreRequest
from fedgrpo.errors import ConfigError

__all__ = [
    "Assignment",
    "AssignmentLog",
    "AssignmentReport",
    "AssignmentStatus",
    "Disposition",
    "Ignored",
    "RoundOutcome",
    "RoundPlan",
    "RoundPolicy",
    "RoundState",
    "build_plan",
    "experts_to_ask",
    "request_builder",
    "validate_values",
]


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class RoundPolicy:
    """How long to wait, how much is enough, how hard to try.

    * ``deadline_s``: the round closes this many seconds after it starts.
    * ``quorum``: minimum rewarded candidates for a group to carry signal (SPEC: 2).
    * ``round_quorum``: if set, the round closes early as soon as this fraction of groups has
      reached ``quorum`` (outstanding work is cancelled).
    * ``over_selection``: ask ⌈M·(1+f)⌉ experts per question instead of M.
    * ``max_retries``: re-sends per assignment after a failure; a retry happens only if more than
      ``retry_backoff_s + retry_min_remaining_s`` remain before the deadline.
    * ``retry_invalid``: also retry after an invalid result (off by default: a device that sent
      NaN once will likely do it again).
    * ``close_early``: close as soon as every assignment is resolved instead of at the deadline.
    * ``reward_range``: inclusive [lo, hi] a reward must lie in to be trusted.
    """

    deadline_s: float = 30.0
    quorum: int = 2
    round_quorum: float | None = None
    over_selection: float = 0.0
    max_retries: int = 1
    retry_backoff_s: float = 0.0
    retry_min_remaining_s: float = 0.0
    retry_invalid: bool = False
    close_early: bool = True
    reward_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        def bad(name: str, value: object, allowed: str) -> ConfigError:
            return ConfigError(f"RoundPolicy.{name}={value!r} is invalid; allowed: {allowed}")

        if not (isinstance(self.deadline_s, (int, float)) and math.isfinite(self.deadline_s)):
            raise bad("deadline_s", self.deadline_s, "a finite number of seconds >= 0")
        if self.deadline_s < 0:
            raise bad("deadline_s", self.deadline_s, "a finite number of seconds >= 0")
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int) or self.quorum < 1:
            raise bad("quorum", self.quorum, "an integer >= 1 (rewarded candidates per group)")
        if self.round_quorum is not None and not (0.0 < self.round_quorum <= 1.0):
            raise bad("round_quorum", self.round_quorum, "None or a fraction in (0, 1]")
        if not (math.isfinite(self.over_selection) and self.over_selection >= 0):
            raise bad("over_selection", self.over_selection, "a factor >= 0 (0.5 = 50% extra)")
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise bad("max_retries", self.max_retries, "an integer >= 0")
        for name in ("retry_backoff_s", "retry_min_remaining_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(name, value, "a finite number of seconds >= 0")
        lo, hi = self.reward_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise bad("reward_range", self.reward_range, "finite (lo, hi) with lo <= hi")


def experts_to_ask(m: int, over_selection: float) -> int:
    """⌈M·(1+f)⌉, robust to float noise (10·1.1 asks 11, not 12)."""
    if m < 0:
        raise ConfigError(f"experts per question M={m}; allowed >= 0")
    return math.ceil(m * (1.0 + over_selection) - 1e-9)


def validate_values(
    values: Sequence[object], expected_len: int, reward_range: tuple[float, float]
) -> str | None:
    """None if ``values`` can be trusted, else why not."""
    if len(values) != expected_len:
        return f"expected {expected_len} values, got {len(values)}"
    lo, hi = reward_range
    if math.isfinite(lo) and math.isfinite(hi):
        # fast path: plain floats inside a finite range are finite numbers in range
        for v in values:
            if type(v) is not float or not lo <= v <= hi:
                break
        else:
            return None
    for j, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            return f"value[{j}]={v!r} is not a number"
        if not math.isfinite(v):
            return f"value[{j}]={v!r} is not finite"
        if not lo <= v <= hi:
            return f"value[{j}]={v!r} is outside the reward range [{lo}, {hi}]"
    return None


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class Assignment:
    """Ask ``client_id`` to score ``candidates`` of group ``group``; id = idempotent request id."""

    assignment_id: str
    client_id: int
    group: int
    candidates: tuple[int, ...]
    primary: bool = True
    index: int = 0


@dataclass(frozen=True)
class RoundPlan:
    """Everything that will be asked in a round (built by :func:`build_plan`)."""

    round_id: str
    assignments: tuple[Assignment, ...]
    num_candidates: tuple[int, ...]
    need: tuple[tuple[int, ...], ...]
    by_id: Mapping[str, Assignment] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.need) != len(self.num_candidates):
            raise ConfigError(
                f"need has {len(self.need)} groups but num_candidates has {len(self.num_candidates)}"
            )
        by_id: dict[str, Assignment] = {}
        sizes = self.num_candidates
        n_groups = len(sizes)
        for i, a in enumerate(self.assignments):
            if a.index != i:
                raise ConfigError(
                    f"assignment {a.assignment_id!r} has index {a.index}, expected {i}"
                )
            if a.assignment_id in by_id:
                raise ConfigError(f"assignment id {a.assignment_id!r} appears twice in the plan")
            if not 0 <= a.group < n_groups:
                raise ConfigError(
                    f"assignment {a.assignment_id!r} names group {a.group}; "
                    f"allowed 0..{n_groups - 1}"
                )
            g = sizes[a.group]
            for c in a.candidates:
                if not 0 <= c < g:
                    raise ConfigError(
                        f"assignment {a.assignment_id!r} names candidate {c} of group {a.group}; "
                        f"allowed 0..{g - 1}"
                    )
            by_id[a.assignment_id] = a
        object.__setattr__(self, "by_id", by_id)

    @property
    def num_groups(self) -> int:
        return len(self.num_candidates)

    @property
    def slots(self) -> int:
        """Max answers any candidate wants (the last axis of :attr:`RoundOutcome.rewards`)."""
        return max((max(n) for n in self.need if n), default=0)

    def clients(self) -> list[int]:
        """Distinct clients asked, in first-asked order."""
        return list(dict.fromkeys(a.client_id for a in self.assignments))


def build_plan(
    experts: Sequence[Sequence[int]],
    dispatch: Sequence[Mapping[int, Sequence[int]]],
    num_candidates: int | Sequence[int],
    policy: RoundPolicy,
    round_id: str = "r0",
) -> RoundPlan:
    """Pure plan from per-question expert lists and candidate dispatch.

    ``dispatch[q]`` maps each *primary* expert of question q to the candidate indices it scores
    (e.g. ``fedgrpo.rounds.dispatch.plan_dispatch``); M = ``len(dispatch[q])``.
    ``experts[q]`` is the ranked expert list for question q; the experts in it that are not
    primaries are the reserve used for over-selection, in order: ⌈M·(1+f)⌉ − M of them are
    asked, each mirroring a primary's shard round-robin. If the reserve is too short, fewer
    extras are asked (never an error: a question can only have the experts that exist).
    """
    groups = len(dispatch)
    if len(experts) != groups:
        raise ConfigError(
            f"experts has {len(experts)} questions but dispatch has {groups}; give one list per question"
        )
    sizes = [num_candidates] * groups if isinstance(num_candidates, int) else list(num_candidates)
    if len(sizes) != groups:
        raise ConfigError(f"num_candidates has {len(sizes)} entries for {groups} questions")
    assignments: list[Assignment] = []
    add = assignments.append
    need: list[tuple[int, ...]] = []
    extra_for: dict[int, int] = {}  # M → extras to ask
    for q in range(groups):
        g = sizes[q]
        if g < 0:
            raise ConfigError(f"num_candidates[{q}]={g}; allowed >= 0")
        counts = [0] * g
        shards: list[tuple[int, tuple[int, ...]]] = []
        dq = dispatch[q]
        for client, cands in dq.items():
            shard = tuple(map(int, cands))
            for c in shard:
                if not 0 <= c < g:
                    raise ConfigError(
                        f"dispatch[{q}] gives expert {client} candidate {c}; allowed 0..{g - 1}"
                    )
                counts[c] += 1
            if len(set(shard)) != len(shard):
                raise ConfigError(f"dispatch[{q}] gives expert {client} a candidate twice: {shard}")
            if shard:
                shards.append((int(client), shard))
        need.append(tuple(counts))
        m = len(dq)
        extra = extra_for.get(m)
        if extra is None:
            extra = extra_for[m] = experts_to_ask(m, policy.over_selection) - m
        reserve = [int(e) for e in experts[q] if e not in dq]
        reserve = list(dict.fromkeys(reserve))[:extra]
        prefix = f"{round_id}-q{q}-c"
        for client, shard in shards:
            add(Assignment(f"{prefix}{client}", client, q, shard, True, len(assignments)))
        if shards:
            for j, client in enumerate(reserve):
                shard = shards[j % len(shards)][1]
                add(Assignment(f"{prefix}{client}", client, q, shard, False, len(assignments)))
    return RoundPlan(round_id, tuple(assignments), tuple(sizes), tuple(need))


def request_builder(
    questions: Sequence[str],
    candidates: Sequence[Sequence[str]],
    reward_mode: str = "auto",
    format_weight: float = 0.0,
) -> Callable[[Assignment], ScoreRequest]:
    """assignment → the :class:`~edge.protocol.ScoreRequest` it sends (request id = assignment
    id, so retries are idempotent). ``questions[q]`` / ``candidates[q][c]`` are group q's texts."""

    def build(a: Assignment) -> ScoreRequest:
        q = questions[a.group]
        return ScoreRequest(
            request_id=a.assignment_id,
            questions=tuple(q for _ in a.candidates),
            completions=tuple(candidates[a.group][c] for c in a.candidates),
            reward_mode=reward_mode,
            format_weight=format_weight,
        )

    return build


# --------------------------------------------------------------------------- state machine


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


_OPEN = frozenset((AssignmentStatus.PENDING, AssignmentStatus.IN_FLIGHT))


class Disposition(str, enum.Enum):
    """What :meth:`RoundState.on_result` did with a result."""

    ACCEPTED = "accepted"
    RETRY = "retry"  # invalid; the driver should re-send (same request id)
    INVALID = "invalid"  # invalid; no retry
    DUPLICATE = "duplicate"
    LATE = "late"  # arrived after the close
    CANCELLED = "cancelled"  # the assignment had been cancelled
    UNKNOWN = "unknown"  # id not in the plan


# Aliases for the hot paths: ``AssignmentStatus.PENDING`` is a lookup through the enum's
# metaclass (~70 ns), a module global ~5 ns, and a round makes tens of them per request.
_PENDING = AssignmentStatus.PENDING
_IN_FLIGHT = AssignmentStatus.IN_FLIGHT
_ANSWERED = AssignmentStatus.ANSWERED
_FAILED = AssignmentStatus.FAILED
_CANCELLED = AssignmentStatus.CANCELLED
_LATE = AssignmentStatus.LATE
_ACCEPTED = Disposition.ACCEPTED


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
        """asked, answered, failed, cancelled, late, retried, retries, ignored."""
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
        # candidate (q, c) ↔ flat slot offset[q] + c
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
        # group → assignments asking it (plan order); per assignment, how many of its
        # candidates still want answers (0 → no longer needed → cancel)
        members: list[list[int]] = [[] for _ in range(plan.num_groups)]
        for a in assignments:
            members[a.group].append(a.index)
        self._members = members
        self._open_cands = [len(a.candidates) for a in assignments]
        self._rewarded = [0] * plan.num_groups
        self._groups_at_quorum = 0
        self._quorum = policy.quorum
        # groups at quorum that close the round early (None: no round quorum), computed once
        # because _check_close runs after every result
        rq = policy.round_quorum
        self._groups_for_quorum = (
            rq * plan.num_groups - 1e-12 if rq is not None and plan.num_groups > 0 else None
        )
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
        a = self._by_id.get(assignment_id)
        if a is None:
            self._ignore(t, assignment_id, Disposition.UNKNOWN, "not in this round's plan", values)
            return Disposition.UNKNOWN
        idx = a.index
        status = self._status[idx]
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
        if self._attempts[idx] == 0:
            self._ignore(t, assignment_id, Disposition.UNKNOWN, "never sent", values)
            return Disposition.UNKNOWN
        cands = a.candidates
        problem = validate_values(values, len(cands), self.policy.reward_range)
        if problem is not None:
            self._ignore(t, assignment_id, Disposition.INVALID, problem, None)
            retry = self._fail(idx, f"invalid: {problem}", t, allow_retry=self.policy.retry_invalid)
            return Disposition.RETRY if retry else Disposition.INVALID
        # Accept (also from the pending state: a reply to an earlier attempt is still valid).
        self._resolve(idx, _ANSWERED, t)
        used = 0
        q = a.group
        client = a.client_id
        base = self._offset[q]
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
        gmax = max(p.num_candidates, default=0)
        slots = p.slots
        total = len(self._got)
        val = np.array(self._val, dtype=np.float64).reshape(total, self._slots)[:, :slots]
        who = np.array(self._who, dtype=np.int64).reshape(total, self._slots)[:, :slots]
        if all(g == gmax for g in p.num_candidates):
            rewards = val.reshape(p.num_groups, gmax, slots)
            experts = who.reshape(p.num_groups, gmax, slots)
        else:
            rewards = np.full((p.num_groups, gmax, slots), np.nan, dtype=np.float64)
            experts = np.full((p.num_groups, gmax, slots), -1, dtype=np.int64)
            sizes = np.asarray(p.num_candidates, dtype=np.intp)
            q_of = np.repeat(np.arange(p.num_groups), sizes)
            c_of = np.arange(total) - np.repeat(np.asarray(self._offset, dtype=np.intp), sizes)
            rewards[q_of, c_of] = val
            experts[q_of, c_of] = who
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
