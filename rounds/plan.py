"""What a round will ask: the assignments (one expert, some candidates of one group, an
idempotent request id), the plan that holds them with how many answers each candidate wants,
how a plan is built from expert lists and candidate dispatch, and the wire request each
assignment sends."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fedgrpo.edge.protocol import ScoreRequest
from fedgrpo.errors import ConfigError
from fedgrpo.rounds.policy import RoundPolicy

__all__ = ["Assignment", "RoundPlan", "build_plan", "request_builder"]


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
    need: list[tuple[int, ...]] = []
    for q in range(groups):
        dq = dispatch[q]
        counts, shards = _primary_shards(q, sizes[q], dq)
        need.append(tuple(counts))
        extra = policy.over_selection
        reserve = [int(e) for e in experts[q] if e not in dq]
        reserve = list(dict.fromkeys(reserve))[:extra]
        _add_assignments(assignments, f"{round_id}-q{q}-c", q, shards, reserve)
    return RoundPlan(round_id, tuple(assignments), tuple(sizes), tuple(need))


def _primary_shards(
    q: int, g: int, dq: Mapping[int, Sequence[int]]
) -> tuple[list[int], list[tuple[int, tuple[int, ...]]]]:
    """Question ``q``'s dispatch checked against its ``g`` candidates: how many primaries score
    each candidate, and the non-empty ``(client, shard)`` pairs in dispatch order."""
    if g < 0:
        raise ConfigError(f"num_candidates[{q}]={g}; allowed >= 0")
    counts = [0] * g
    shards: list[tuple[int, tuple[int, ...]]] = []
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
    return counts, shards


def _add_assignments(
    out: list[Assignment],
    prefix: str,
    q: int,
    shards: list[tuple[int, tuple[int, ...]]],
    reserve: list[int],
) -> None:
    """Append question ``q``'s assignments to ``out``: the primaries, then each reserve expert
    mirroring a primary's shard round-robin (none if no primary has a shard)."""
    add = out.append
    for client, shard in shards:
        add(Assignment(f"{prefix}{client}", client, q, shard, True, len(out)))
    if shards:
        for j, client in enumerate(reserve):
            shard = shards[j % len(shards)][1]
            add(Assignment(f"{prefix}{client}", client, q, shard, False, len(out)))


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
