"""Round semantics with a fake clock (time is just a float)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.rounds import (
    AssignmentStatus,
    Disposition,
    RoundPolicy,
    RoundState,
    build_plan,
    experts_to_ask,
    validate_values,
)

G = 4


def split2(q_experts: list[int]) -> dict[int, list[int]]:
    """Expert 1 scores candidates 0,1; expert 2 scores 2,3."""
    a, b = q_experts
    return {a: [0, 1], b: [2, 3]}


def broadcast(q_experts: list[int]) -> dict[int, list[int]]:
    return {e: list(range(G)) for e in q_experts}


def make(
    groups: int = 1,
    mode: str = "split",
    policy: RoundPolicy | None = None,
    reserve: int = 0,
    t0: float = 100.0,
) -> RoundState:
    policy = policy or RoundPolicy(deadline_s=10.0)
    experts = [[10 * q + k for k in range(2 + reserve)] for q in range(groups)]
    fn = split2 if mode == "split" else broadcast
    dispatch = [fn(e[:2]) for e in experts]
    plan = build_plan(experts, dispatch, G, policy, round_id="r7")
    return RoundState(plan, policy, t0)


def send_all(st: RoundState, t: float) -> None:
    for a in st.pending():
        st.on_sent(a, t)


# ----------------------------------------------------------------- policy and plan


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("deadline_s", -1.0),
        ("deadline_s", math.inf),
        ("quorum", 0),
        ("round_quorum", 0.0),
        ("round_quorum", 1.5),
        ("over_selection", -1),
        ("over_selection", 0.5),
        ("max_retries", -1),
        ("retry_backoff_s", -1.0),
        ("reward_range", (1.0, 0.0)),
    ],
)
def test_policy_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        RoundPolicy(**{field: value})  # type: ignore[arg-type]


def test_experts_to_ask_is_m_plus_the_over_selection_count() -> None:
    assert experts_to_ask(2, 0) == 2
    assert experts_to_ask(2, 1) == 3
    assert experts_to_ask(10, 1) == 11
    with pytest.raises(ConfigError):
        experts_to_ask(-1, 0)


def test_plan_ids_are_deterministic_and_idempotent() -> None:
    st = make(groups=2)
    ids = [a.assignment_id for a in st.plan.assignments]
    assert ids == ["r7-q0-c0", "r7-q0-c1", "r7-q1-c10", "r7-q1-c11"]
    assert st.plan.need == ((1, 1, 1, 1), (1, 1, 1, 1))
    assert st.plan.clients() == [0, 1, 10, 11]
    assert st.plan.slots == 1


def test_plan_rejects_bad_dispatch() -> None:
    pol = RoundPolicy()
    with pytest.raises(ConfigError, match="candidate 9"):
        build_plan([[1]], [{1: [9]}], 4, pol)
    with pytest.raises(ConfigError, match="one list per question"):
        build_plan([[1], [2]], [{1: [0]}], 4, pol)
    with pytest.raises(ConfigError, match="twice"):
        build_plan([[1]], [{1: [0, 0]}], 4, pol)


def test_over_selection_extras_mirror_shards() -> None:
    pol = RoundPolicy(over_selection=2)
    st = make(policy=pol, reserve=3)
    a = st.plan.assignments
    assert [(x.client_id, x.candidates, x.primary) for x in a] == [
        (0, (0, 1), True),
        (1, (2, 3), True),
        (2, (0, 1), False),
        (3, (2, 3), False),
    ]
    # short reserve: only what exists
    st = make(policy=pol, reserve=1)
    assert len(st.plan.assignments) == 3


def test_broadcast_need_is_m() -> None:
    st = make(mode="broadcast")
    assert st.plan.need == ((2, 2, 2, 2),)
    assert st.plan.slots == 2


# ----------------------------------------------------------------- happy path


def test_all_answer_close_complete() -> None:
    st = make(groups=2)
    send_all(st, 100.0)
    for i, a in enumerate(st.plan.assignments):
        assert not st.is_closed()
        assert st.on_result(a.assignment_id, [0.1 * i, 1.0], 101.0 + i) is Disposition.ACCEPTED
    assert st.is_closed() and st.closed_by == "complete"
    out = st.outcome()
    assert out.duration_s == pytest.approx(4.0)
    assert out.rewards.shape == (2, 4, 1)
    assert out.rewards[0, :, 0].tolist() == [0.0, 1.0, 0.1, 1.0]
    assert out.experts[1, :, 0].tolist() == [10, 10, 11, 11]
    assert out.coverage.tolist() == [1.0, 1.0]
    assert out.has_signal.all()
    c = out.counts()
    assert c["asked"] == 4 and c["answered"] == 4 and c["late"] == 0
    assert out.assignments[0].latency_s == pytest.approx(1.0)


def test_close_early_false_waits_for_deadline() -> None:
    st = make(policy=RoundPolicy(deadline_s=10.0, close_early=False))
    send_all(st, 100.0)
    for a in st.plan.assignments:
        st.on_result(a.assignment_id, [1.0, 1.0], 101.0)
    assert not st.is_closed()
    st.on_deadline(110.0)
    assert st.is_closed() and st.closed_by == "deadline"
    assert st.outcome().counts()["answered"] == 2


# ----------------------------------------------------------------- deadline / late


def test_deadline_shorter_than_all_means_all_missing() -> None:
    st = make(groups=3, policy=RoundPolicy(deadline_s=0.5))
    send_all(st, 100.0)
    st.on_deadline(100.5)
    assert st.is_closed() and st.closed_by == "deadline"
    cancelled = st.to_cancel()
    assert len(cancelled) == 6  # every straggler must be cancelled by the driver
    assert st.to_cancel() == []  # each once
    for a in st.plan.assignments:
        assert st.on_result(a.assignment_id, [1.0, 1.0], 101.0) is Disposition.LATE
    out = st.outcome()
    assert np.isnan(out.rewards).all()
    assert not out.has_signal.any()
    assert out.coverage.tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(out.usable_rewards()).all()
    assert {r.status for r in out.assignments} == {AssignmentStatus.LATE}
    assert [i.kind for i in out.ignored] == ["late"] * 6
    assert out.ignored[0].values == (1.0, 1.0)  # kept for async (FedBuff-style) use


def test_result_after_deadline_closes_and_is_late() -> None:
    st = make()
    send_all(st, 100.0)
    a0, a1 = st.plan.assignments
    assert st.on_result(a0.assignment_id, [1.0, 0.0], 105.0) is Disposition.ACCEPTED
    # the driver has not called on_deadline yet but time is past it
    assert st.on_result(a1.assignment_id, [1.0, 0.0], 110.01) is Disposition.LATE
    assert st.is_closed() and st.closed_by == "deadline"
    assert st.status(a1.assignment_id) is AssignmentStatus.LATE
    out = st.outcome()
    assert out.rewarded.tolist() == [2]
    assert out.candidate_mask.tolist() == [[True, True, False, False]]


def test_result_exactly_at_deadline_counts() -> None:
    st = make()
    send_all(st, 100.0)
    a0 = st.plan.assignments[0]
    assert st.on_result(a0.assignment_id, [1.0, 1.0], 110.0) is Disposition.ACCEPTED


# ----------------------------------------------------------------- duplicates, unknown


def test_duplicates_and_unknown_are_ignored() -> None:
    st = make()
    send_all(st, 100.0)
    a0 = st.plan.assignments[0]
    assert st.on_result(a0.assignment_id, [1.0, 1.0], 101.0) is Disposition.ACCEPTED
    assert st.on_result(a0.assignment_id, [0.0, 0.0], 102.0) is Disposition.DUPLICATE
    assert st.on_result("nope", [0.0], 102.0) is Disposition.UNKNOWN
    assert not st.on_failure("nope", "x", 102.0)
    out = st.outcome()
    assert out.rewards[0, :2, 0].tolist() == [1.0, 1.0]  # first answer kept
    kinds = [i.kind for i in out.ignored]
    assert kinds == ["duplicate", "unknown", "unknown"]


def test_unsent_result_is_not_trusted() -> None:
    st = make()
    a0 = st.plan.assignments[0]
    assert st.on_result(a0.assignment_id, [1.0, 1.0], 101.0) is Disposition.UNKNOWN


def test_sending_twice_or_after_close_is_a_driver_bug() -> None:
    st = make()
    a0 = st.plan.assignments[0]
    st.on_sent(a0, 100.0)
    with pytest.raises(ConfigError, match="in_flight"):
        st.on_sent(a0, 100.0)
    st.on_deadline(200.0)
    with pytest.raises(ConfigError, match="closed"):
        st.on_sent(st.plan.assignments[1], 200.0)
    with pytest.raises(ConfigError, match="not in round"):
        st.status("zzz")


# ----------------------------------------------------------------- retries


def test_retry_within_budget_then_failed() -> None:
    st = make(policy=RoundPolicy(deadline_s=10.0, max_retries=2))
    send_all(st, 100.0)
    a0 = st.plan.assignments[0].assignment_id
    assert st.on_failure(a0, "connection refused", 100.1) is True
    assert st.status(a0) is AssignmentStatus.PENDING
    assert [a.assignment_id for a in st.pending()] == [a0]
    st.on_sent(a0, 100.2)
    assert st.on_failure(a0, "http 500", 100.3) is True
    st.on_sent(a0, 100.4)
    assert st.on_failure(a0, "http 500", 100.5) is False  # 3 attempts = 1 + 2 retries
    assert st.status(a0) is AssignmentStatus.FAILED
    rep = st.outcome().assignments[0]
    assert rep.attempts == 3 and rep.retries == 2
    assert rep.failures == ("connection refused", "http 500", "http 500")


def test_retry_then_success_keeps_request_id() -> None:
    st = make(policy=RoundPolicy(deadline_s=10.0, max_retries=1))
    send_all(st, 100.0)
    a0, a1 = (a.assignment_id for a in st.plan.assignments)
    assert st.on_failure(a0, "timeout", 101.0)
    st.on_sent(a0, 101.0)
    assert st.on_result(a0, [0.5, 0.5], 102.0) is Disposition.ACCEPTED
    st.on_result(a1, [0.5, 0.5], 102.0)
    out = st.outcome()
    assert out.counts()["retried"] == 1 and out.counts()["answered"] == 2
    assert out.assignments[0].latency_s == pytest.approx(1.0)


def test_no_retry_without_time_left() -> None:
    pol = RoundPolicy(
        deadline_s=10.0, max_retries=5, retry_backoff_s=1.0, retry_min_remaining_s=0.5
    )
    st = make(policy=pol)
    send_all(st, 100.0)
    a0 = st.plan.assignments[0].assignment_id
    assert st.on_failure(a0, "x", 108.4) is True  # 1.6 s left > 1.5
    st.on_sent(a0, 108.5)
    assert st.on_failure(a0, "x", 108.6) is False  # 1.4 s left
    assert st.status(a0) is AssignmentStatus.FAILED


def test_no_retries_when_budget_zero_and_all_failed_closes() -> None:
    st = make(policy=RoundPolicy(deadline_s=10.0, max_retries=0))
    send_all(st, 100.0)
    for a in st.plan.assignments:
        assert st.on_failure(a.assignment_id, "refused", 100.1) is False
    assert st.is_closed() and st.closed_by == "complete"
    assert st.outcome().counts()["failed"] == 2


def test_failure_after_close_is_ignored() -> None:
    st = make()
    send_all(st, 100.0)
    st.on_deadline(110.0)
    assert st.on_failure(st.plan.assignments[0].assignment_id, "x", 111.0) is False
    assert st.outcome().ignored[-1].kind == "failure_ignored"


def test_pending_retry_at_deadline_is_failed() -> None:
    st = make(policy=RoundPolicy(deadline_s=10.0, max_retries=1))
    send_all(st, 100.0)
    a0 = st.plan.assignments[0].assignment_id
    assert st.on_failure(a0, "x", 101.0)
    st.on_deadline(110.0)
    assert st.status(a0) is AssignmentStatus.FAILED
    assert st.pending() == []


# ----------------------------------------------------------------- over-selection


def test_over_selection_cancels_extras_once_covered() -> None:
    st = make(policy=RoundPolicy(deadline_s=10.0, over_selection=2), reserve=2)
    send_all(st, 100.0)
    p0, p1, x0, x1 = (a.assignment_id for a in st.plan.assignments)
    # the extra for shard 0 answers first; the primary for shard 0 is no longer needed
    assert st.on_result(x0, [0.2, 0.3], 101.0) is Disposition.ACCEPTED
    assert [a.assignment_id for a in st.to_cancel()] == [p0]
    assert st.status(p0) is AssignmentStatus.CANCELLED
    assert st.on_result(p0, [1.0, 1.0], 101.5) is Disposition.CANCELLED
    assert st.on_result(p1, [0.4, 0.5], 102.0) is Disposition.ACCEPTED
    assert [a.assignment_id for a in st.to_cancel()] == [x1]
    assert st.is_closed() and st.closed_by == "complete"
    out = st.outcome()
    assert out.rewards[0, :, 0].tolist() == [0.2, 0.3, 0.4, 0.5]
    assert out.experts[0, :, 0].tolist() == [2, 2, 1, 1]
    assert out.counts()["cancelled"] == 2
    by = out.rewards_by_expert([[0, 1, 2, 3]])
    assert by.shape == (1, 4, 4)
    assert by[0, :2, 2].tolist() == [0.2, 0.3] and np.isnan(by[0, 2:, 2]).all()
    assert np.isnan(by[0, :, 0]).all() and by[0, 2:, 1].tolist() == [0.4, 0.5]
    with pytest.raises(ConfigError, match="not in experts"):
        out.rewards_by_expert([[0, 1]])


def test_over_selection_broadcast_first_m_answers_count() -> None:
    pol = RoundPolicy(deadline_s=10.0, over_selection=1)
    st = make(mode="broadcast", policy=pol, reserve=1)
    assert len(st.plan.assignments) == 3
    send_all(st, 100.0)
    a, b, c = (x.assignment_id for x in st.plan.assignments)
    st.on_result(c, [0.0] * 4, 101.0)
    assert st.to_cancel() == []
    st.on_result(a, [1.0] * 4, 102.0)
    assert [x.assignment_id for x in st.to_cancel()] == [b]
    out = st.outcome()
    assert st.is_closed()
    assert out.rewards.shape == (1, 4, 2)
    assert out.experts[0, 0].tolist() == [2, 0]
    assert out.coverage.tolist() == [1.0]


def test_surplus_values_are_not_counted() -> None:
    # two experts share candidate 1: need[1] == 2, others need 1 → surplus from overlapping shard
    pol = RoundPolicy(deadline_s=10.0)
    plan = build_plan([[1, 2, 3]], [{1: [0, 1], 2: [1, 2]}], 3, pol)
    st = RoundState(plan, pol, 0.0)
    send_all(st, 0.0)
    assert plan.need == ((1, 2, 1),)
    st.on_result("r0-q0-c1", [1.0, 1.0], 1.0)
    st.on_result("r0-q0-c2", [0.0, 0.0], 2.0)
    out = st.outcome()
    assert out.answers_per_candidate.tolist() == [[1, 2, 1]]


# ----------------------------------------------------------------- quorum


def test_group_quorum_marks_no_signal() -> None:
    st = make(groups=2, policy=RoundPolicy(deadline_s=10.0, quorum=3))
    send_all(st, 100.0)
    a = st.plan.assignments
    st.on_result(a[0].assignment_id, [1.0, 0.0], 101.0)  # group 0: 2 rewarded < 3
    st.on_result(a[2].assignment_id, [1.0, 0.0], 101.0)
    st.on_result(a[3].assignment_id, [1.0, 0.0], 101.0)  # group 1: 4 rewarded
    st.on_deadline(110.0)
    out = st.outcome()
    assert out.rewarded.tolist() == [2, 4]
    assert out.has_signal.tolist() == [False, True]
    u = out.usable_rewards()
    assert np.isnan(u[0]).all() and not np.isnan(u[1]).any()
    assert out.coverage.tolist() == [0.5, 1.0]


def test_round_quorum_closes_early_and_cancels() -> None:
    pol = RoundPolicy(deadline_s=10.0, quorum=2, round_quorum=0.5)
    st = make(groups=2, policy=pol)
    send_all(st, 100.0)
    a = st.plan.assignments
    st.on_result(a[0].assignment_id, [1.0, 0.0], 101.0)
    assert st.is_closed() and st.closed_by == "round_quorum"
    assert {x.assignment_id for x in st.to_cancel()} == {x.assignment_id for x in a[1:]}
    out = st.outcome()
    assert out.counts()["cancelled"] == 3
    assert out.t_close == 101.0
    assert st.on_result(a[1].assignment_id, [1.0, 1.0], 101.1) is Disposition.LATE


# ----------------------------------------------------------------- invalid values


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ([1.0], "expected 2 values"),
        ([1.0, float("nan")], "not finite"),
        ([1.0, float("inf")], "not finite"),
        ([1.0, 1.5], "outside the reward range"),
        ([-0.1, 0.0], "outside the reward range"),
        ([1.0, "x"], "not a number"),
    ],
)
def test_invalid_values_are_failures(values: list[float], why: str) -> None:
    st = make(policy=RoundPolicy(deadline_s=10.0, max_retries=3))
    send_all(st, 100.0)
    a0 = st.plan.assignments[0].assignment_id
    assert st.on_result(a0, values, 101.0) is Disposition.INVALID
    assert st.status(a0) is AssignmentStatus.FAILED
    out = st.outcome()
    assert np.isnan(out.rewards[0, :2]).all()
    assert why in out.assignments[0].failures[0]
    assert out.ignored[0].kind == "invalid"


def test_invalid_values_retry_when_allowed_and_custom_range() -> None:
    pol = RoundPolicy(deadline_s=10.0, max_retries=1, retry_invalid=True, reward_range=(-1, 2))
    st = make(policy=pol)
    send_all(st, 100.0)
    a0 = st.plan.assignments[0].assignment_id
    assert st.on_result(a0, [1.5, 3.0], 101.0) is Disposition.RETRY
    st.on_sent(a0, 101.0)
    assert st.on_result(a0, [1.5, -1.0], 102.0) is Disposition.ACCEPTED


def test_validate_values_ok() -> None:
    assert validate_values([0.0, 1.0, np.float32(0.5)], 3, (0.0, 1.0)) is None


# ----------------------------------------------------------------- degenerate


def test_empty_plan_is_closed_at_once() -> None:
    pol = RoundPolicy()
    st = RoundState(build_plan([], [], 4, pol), pol, 5.0)
    assert st.is_closed()
    out = st.outcome()
    assert out.rewards.shape == (0, 0, 0)
    assert out.duration_s == 0.0


def test_explicit_close_cancels_outstanding() -> None:
    st = make()
    send_all(st, 0.0)
    st.close(1.0, "shutdown")
    assert st.closed_by == "shutdown"
    assert len(st.to_cancel()) == 2
    assert st.outcome().counts()["cancelled"] == 2
