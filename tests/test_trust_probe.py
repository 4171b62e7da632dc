"""The reward probe (the auxiliary set as the root of trust, ``server/grpo/trust.py``): its
score, the probe requests built from competence bits, its path through a gatherer and a
device's behaviour, and what it does to the trust weights, selection and a checkpoint."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from fedgrpo.edge.answer_format import extract_answer
from fedgrpo.edge.behaviour import Behaviour
from fedgrpo.edge.protocol import RewardResponse, ScoreRequest
from fedgrpo.experiments.enrolment import probe_requests
from fedgrpo.server.gathering.inprocess import DirectGatherer
from fedgrpo.server.grpo.trust import RoundAggregator, probe_agreement, trusted_pool
from fedgrpo.server.tasks import TaskItem
from fedgrpo.sim.rng import ClientStream, stream_generator


def test_probe_agreement_orders_pairs() -> None:
    assert probe_agreement([1, 0, 1, 0, 0.9, 0.2]) == 1.0  # honest
    assert probe_agreement([0, 1, 0, 1]) == 0.0  # inverted
    assert probe_agreement([1, 1, 1, 1]) == 0.5  # always approve: ties
    assert probe_agreement([1, 0, float("nan"), 0, 0, 1]) == 0.5  # NaN pair skipped
    assert np.isnan(probe_agreement([]))
    with pytest.raises(ValueError, match="pairs"):
        probe_agreement([1, 0, 1])


def test_trusted_pool_drops_weight_zero_only_when_someone_is_left() -> None:
    w = np.array([1.0, 0.0, 0.6])
    assert trusted_pool(None, w) == [0, 2]
    assert trusted_pool([1, 2], w) == [2]
    assert trusted_pool([1], w) == [1]  # nobody left: unchanged
    assert trusted_pool([0, 1], np.ones(3)) == [0, 1]


AUX = [TaskItem("add", f"{a}+{b}", f"{a}+{b}={a + b}", str(a + b)) for a, b in
       [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9)]]  # fmt: skip


def test_probe_requests_pair_reference_and_slip_on_right_items_only() -> None:
    bits = np.array([1.0, 0.0, 1.0, np.nan, 1.0])
    qs, cs = probe_requests(AUX, bits, 2, random.Random(0))
    assert len(qs) == len(cs) == 4 and qs[0] == qs[1] and qs[2] == qs[3]
    by_q = {i.question: i for i in AUX}
    for q, ref, slip in zip(qs[0::2], cs[0::2], cs[1::2]):
        item = by_q[q]
        assert AUX.index(item) in (0, 2, 4)  # only items the client answered right
        assert extract_answer(ref) == item.answer
        assert extract_answer(slip) == str(int(item.answer) + 1)
    assert probe_requests(AUX, np.zeros(5), 4, random.Random(0)) == ([], [])


def _judge(behaviour: Behaviour, k: int) -> Any:
    """A device that knows every answer (agreement reward) and then behaves so."""
    answers = {i.question: i.answer for i in AUX}
    stream = ClientStream(stream_generator(0, k, "reward"))

    def score(req: Any) -> RewardResponse:
        assert isinstance(req, ScoreRequest)  # a probe is an ordinary score request
        honest = [float(extract_answer(c) == answers[q]) for q, c in zip(req.questions,
                  req.completions)]  # fmt: skip
        values = behaviour.apply(req.questions, honest, stream)
        return RewardResponse(req.request_id, f"c{k}", tuple(values))

    return score


def test_probe_through_a_gatherer_catches_liars_before_the_first_round() -> None:
    kinds = ["honest", "inverted", "honest", "always_approve", "random"]
    gatherer = DirectGatherer([_judge(Behaviour(kind), k) for k, kind in enumerate(kinds)])
    try:
        requests = {k: probe_requests(AUX, np.ones(5), 5, random.Random(k)) for k in range(5)}
        answers = gatherer.probe(requests, round_index=0)
    finally:
        gatherer.close()
    scores = {k: probe_agreement(v) for k, v in answers.items() if v is not None}
    assert scores[0] == scores[2] == 1.0 and scores[1] == 0.0 and scores[3] == 0.5
    agg = RoundAggregator("trust", 5, competence=lambda: np.full((5, 5), 1.0))
    agg.set_probe(scores)
    w = agg.last_weights
    # the inverter is calibrated (read as 1 - r) and trusted; approve-all is excluded
    assert w[0] == w[1] == w[2] == 1.0 and w[3] == 0.0 and agg.record() == {}
    assert list(agg.flipped) == [False, True, False, False, False]
    assert trusted_pool(None, w) == [k for k in range(5) if w[k] > 0]
    truth = np.array([1.0, 0.0, 0.0, 1.0])
    table = np.stack([truth, 1 - truth, truth], axis=1)[None]  # honest, inverter, honest
    np.testing.assert_array_equal(agg(table, [[0, 1, 2]])[0], truth)
    assert agg.record()["trust_flipped"] == [1]


def test_a_client_that_inverts_only_on_the_probe_is_excluded_by_consensus() -> None:
    rng = np.random.default_rng(0)
    agg = RoundAggregator("trust", 4, competence=lambda: np.full((4, 6), 0.8))
    agg.set_probe({0: 1.0, 1: 1.0, 2: 1.0, 3: 0.0})  # 3 lies on the probe only
    for _ in range(8):
        truth = (rng.random((3, 6)) < 0.5).astype(float)
        table = np.repeat(truth[:, :, None], 4, axis=2)  # everyone honest in the rounds
        combined = agg(table, [[0, 1, 3], [1, 2, 3], [0, 2, 3]])
    assert agg.last_weights[3] == 0.0 and min(agg.last_weights[:3]) == pytest.approx(1.0)
    np.testing.assert_allclose(combined, truth)


def test_flip_below_zero_never_calibrates() -> None:
    from fedgrpo.server.grpo.trust import TrustConfig

    agg = RoundAggregator("trust", 2, config=TrustConfig(flip_below=0.0))
    agg.set_probe({0: 1.0, 1: 0.0})
    assert not agg.flipped.any() and agg.last_weights[1] == 0.0


def test_probe_trust_survives_rounds_and_a_checkpoint_exactly() -> None:
    rng = np.random.default_rng(3)
    agg = RoundAggregator("trust", 4, competence=lambda: np.full((4, 6), 0.8))
    agg.set_probe({0: 1.0, 1: 0.3, 2: 0.1, 3: float("nan")})  # 2 is read as 1 - r
    experts = [[0, 2, 3], [1, 2, 3]]
    rounds = [rng.random((2, 4, 3)) for _ in range(4)]
    for r in rounds[:2]:
        agg(r, experts)
    assert agg.last_weights[1] == 0.0 and agg.record()["trust_probe"][3] is None
    assert agg.record()["trust_flipped"] == [2]
    again = RoundAggregator("trust", 4, competence=lambda: np.full((4, 6), 0.8))
    again.restore(agg.state())
    for r in rounds[2:]:
        np.testing.assert_array_equal(agg(r, experts), again(r, experts))
    np.testing.assert_array_equal(agg.last_weights, again.last_weights)
    np.testing.assert_array_equal(agg.flipped, again.flipped)
    with pytest.raises(Exception, match="same scenario"):
        RoundAggregator("trust", 3).restore(agg.state())


def _sim_gatherer(journal: Any, resume: int | None) -> Any:
    """A SimGatherer over the quickstart fleet (5 clients) whose scorers are ``_judge``s,
    client 1 inverted and every device with randomised response (ε = 1)."""
    from pathlib import Path

    from fedgrpo.experiments.runtimes.sim import SimGatherer
    from fedgrpo.scenarios.loader import load_scenario

    root = Path(__file__).resolve().parent.parent
    g0 = "clients.groups.0"
    s = load_scenario(root / "scenarios" / "quickstart.yaml", [
        f"{g0}.privacy.mechanism=randomised_response", f"{g0}.privacy.epsilon=1",
        "server.grpo.group_size=2",
    ])  # fmt: skip
    fns = [_judge(Behaviour(), k) for k in range(5)]
    g = SimGatherer(s, fns, seed=7)
    g.open_journal(journal, resume)
    return g


def test_sim_probe_is_journalled_so_a_resume_charges_the_same_budget(tmp_path: Any) -> None:
    from fedgrpo.server.gathering.base import GatherRequest

    journal = tmp_path / "journal.jsonl"
    req = GatherRequest(0, ["1+2"], [[" x\nanswer: 3", " x\nanswer: 4"]], [[0, 2]], ["add"], ["3"])
    probes = {k: probe_requests(AUX, np.ones(5), 3, random.Random(k)) for k in range(5)}
    first = _sim_gatherer(journal, None)
    got = first.probe(probes, round_index=0)
    first.gather(req, np.random.default_rng(0))
    spent = [d.accountant.released for d in first.devices]
    assert spent[3] == 6 and all(v is not None and len(v) == 6 for v in got.values())
    resumed = _sim_gatherer(journal, 1)  # replays round 0, its probe included
    assert [d.accountant.released for d in resumed.devices] == spent
    nxt = GatherRequest(1, ["3+4"], [[" x\nanswer: 7", " x\nanswer: 1"]], [[1, 3]], ["add"], ["7"])
    a = first.gather(nxt, np.random.default_rng(1)).rewards
    b = resumed.gather(nxt, np.random.default_rng(1)).rewards
    np.testing.assert_array_equal(a, b)
    assert first.probe(probes, 2) == resumed.probe(probes, 2)  # same (seed, round, client) draws


class _Knower:
    """An edge scorer that knows every auxiliary answer (agreement reward), no model."""

    name = "knower"

    def score(self, questions: Any, completions: Any, reward_mode: str = "auto",
              format_weight: float = 0.0, partial_credit: float = 0.0) -> list[float]:  # fmt: skip
        answers = {i.question: i.answer for i in AUX}
        return [float(extract_answer(c) == answers[q]) for q, c in zip(questions, completions)]

    def competence(self, questions: Any, reference_answers: Any) -> list[float]:
        return [1.0] * len(questions)


def test_probe_over_http_reaches_the_devices_behaviour_on_real_edge_servers() -> None:
    """Three real edge services on loopback (honest, inverted, always-approve devices, the
    last also private); the probe is an ordinary score request, so each device's behaviour
    and privacy apply to it and its budget is charged."""
    from fedgrpo.edge.device_rewards import DeviceRewards, DeviceScorer, GeneratorDraws
    from fedgrpo.edge.privacy import PrivacySpec
    from fedgrpo.edge.service import start_server
    from fedgrpo.edge.service_config import ServiceConfig
    from fedgrpo.rounds import RoundPolicy
    from fedgrpo.server.gathering.asynchronous import AsyncGatherer, LoopThread
    from fedgrpo.server.gathering.transport import ClientEndpoint, HttpTransport

    devices = [DeviceRewards(Behaviour("honest")), DeviceRewards(Behaviour("inverted")),
               DeviceRewards(Behaviour("always_approve"),
                             PrivacySpec("randomised_response", epsilon=4.0))]  # fmt: skip
    loop, runners, eps = LoopThread("probe-edges"), [], []
    try:
        for k, device in enumerate(devices):
            scorer = DeviceScorer(_Knower(), device, GeneratorDraws(k))
            runner, port = loop.run(start_server(scorer, ServiceConfig(model_name=f"c{k}"),
                                                 "127.0.0.1", 0))  # fmt: skip
            runners.append(runner)
            eps.append(ClientEndpoint(k, f"http://127.0.0.1:{port}", f"c{k}"))
        with AsyncGatherer(eps, RoundPolicy(deadline_s=5.0), HttpTransport()) as gatherer:
            requests = {k: probe_requests(AUX, np.ones(5), 5, random.Random(k)) for k in range(3)}
            answers = gatherer.probe(requests, round_index=0)
    finally:
        for r in runners:
            loop.run(r.cleanup())
        loop.stop()
    scores = {k: probe_agreement(v) for k, v in answers.items() if v is not None}
    assert scores[0] == 1.0 and scores[1] == 0.0
    assert 0.2 <= scores[2] <= 0.8  # approve-all, randomised: no information about the truth
    assert devices[2].accountant.released == 10 and devices[0].accountant.released == 0
