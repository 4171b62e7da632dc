"""Late rewards (issue 14): the held-group buffer, the real async gatherer keeping stragglers
and delivering their rewards, and the simulator not letting stragglers crowd out on-time
answers. The model-in-the-loop sim run whose late rewards reach the update is in
``test_runner.py`` (it shares that module's tiny zoo)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgrpo.edge.protocol import RewardResponse
from fedgrpo.rounds import RoundPolicy
from fedgrpo.scenarios.loader import load_scenario
from fedgrpo.server.gathering.asynchronous import AsyncGatherer
from fedgrpo.server.gathering.base import GatherRequest, LateReward
from fedgrpo.server.gathering.transport import ClientEndpoint, InProcessTransport
from fedgrpo.server.grpo.offpolicy import LateRewardConfig
from fedgrpo.server.late_groups import LateGroups, fresh_group, late_record

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"


def test_held_groups_wait_for_late_rewards_and_respect_the_staleness_bound() -> None:
    lg = LateGroups(LateRewardConfig(max_staleness=2))
    rewards = np.full((2, 4, 2), np.nan)
    rewards[:, :2, 0] = 1.0  # slot 0 answered candidates 0-1 of both questions
    out = np.zeros_like(rewards, dtype=bool)
    out[0, 2:, 1] = True  # question 0: slot 1 is still working on candidates 2-3
    held = lg.split(0, 0, batch=None, rewards=rewards, outstanding=out)  # type: ignore[arg-type]
    assert held.tolist() == [True, False]  # question 1 has nothing outstanding: used now
    assert lg.take(version=1, round_index=1) == []  # incomplete, within the bound
    lg.deliver([LateReward(0, 0, 2, 1, 0.0), LateReward(0, 0, 3, 1, 1.0), LateReward(0, 1, 2, 1, 1.0)])
    (due,) = lg.take(version=1, round_index=1)
    assert due.coverage() == 1.0 and due.rewards[3, 1] == 1.0
    assert lg.counters() == (2, 1)  # the reward for question 1 came after it was used
    # a group that never completes is released at the bound with what it has
    lg.split(5, 3, batch=None, rewards=rewards, outstanding=out)  # type: ignore[arg-type]
    assert lg.take(version=4, round_index=6) == []
    (forced,) = lg.take(version=4, round_index=7)
    assert forced.coverage() == 0.5
    rec = late_record(1, [1, 1, 2], 1, 3, 0)
    assert rec["staleness_hist"] == {"1": 2, "2": 1} and rec["stale_groups_used"] == 3


def test_the_fedbuff_buffer_keeps_ready_groups_until_an_update_takes_them() -> None:
    lg = LateGroups(LateRewardConfig(max_staleness=2, min_update_groups=3))
    rewards = np.full((4, 2), np.nan)
    rewards[:, 0] = [1.0, 0.0, 1.0, 0.0]
    ready = fresh_group(5, 2, 1, rewards, batch=None, experts=[7, 3])  # type: ignore[arg-type]
    assert ready.coverage() == 1.0 and not ready.outstanding.any() and ready.experts == (7, 3)
    rewards[0, 0] = 9.0
    assert ready.rewards[0, 0] == 1.0  # a copy: the round's array may change
    lg.keep([ready])
    assert lg.buffered() == 1
    # not aged by rounds without an update: still due (complete), at its own version
    (due,) = lg.take(version=2, round_index=9)
    assert due is ready and due.version == 2 and lg.buffered() == 0
    assert late_record(0, [], 0, 0, 0, 2, 5)["groups_buffered"] == 2
    assert late_record(0, [], 0, 0, 0, 2, 5)["groups_trained"] == 5


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_min_update_groups_must_be_a_count(bad: Any) -> None:
    from fedgrpo.errors import ConfigError

    with pytest.raises(ConfigError, match="min_update_groups"):
        LateRewardConfig(min_update_groups=bad)


@pytest.mark.parametrize("bad", ["0", "-1", "2.5", "many"])
def test_a_scenario_names_a_bad_min_update_groups(bad: str) -> None:
    with pytest.raises(Exception, match=r"round_policy\.min_update_groups"):
        load_scenario(LIBRARY / "async-staleness.yaml", [f"round_policy.min_update_groups={bad}"])


def test_a_late_group_keeps_its_experts_and_is_weighted_by_trust_without_moving_it() -> None:
    from fedgrpo.server.grpo.trust import RoundAggregator

    lg = LateGroups(LateRewardConfig(max_staleness=2))
    rewards = np.full((1, 4, 3), np.nan)
    rewards[0, :2, 0] = [1.0, 0.0]  # slot 0 (client 4) answered candidates 0-1
    out = np.zeros_like(rewards, dtype=bool)
    out[0, :, 1:] = True  # slots 1, 2 (clients 2, 0) still working
    out[0, 2:, 0] = True
    lg.split(0, 0, batch=None, rewards=rewards, outstanding=out, experts=[[4, 2, 0]])  # type: ignore[arg-type]
    lg.deliver([LateReward(0, 0, c, s, v) for s in (1, 2) for c, v in enumerate([0, 1, 0, 1])]
               + [LateReward(0, 0, 2, 0, 1.0), LateReward(0, 0, 3, 0, 0.0)])  # fmt: skip
    (due,) = lg.take(version=1, round_index=1)
    assert due.experts == (4, 2, 0)
    agg = RoundAggregator("trust", 5, competence=lambda: np.ones((5, 4)))
    agg.set_probe({0: 1.0, 2: 1.0, 4: 0.0})  # client 4 inverts: read as 1 - r
    agg(np.zeros((1, 4, 3)), [[0, 1, 2]])  # one fresh round sets the consensus scores
    before = repr(agg.state())
    combined = agg(due.rewards[None], [list(due.experts)], update=False)
    np.testing.assert_allclose(combined[0], [0.0, 1.0, 0.0, 1.0])
    assert repr(agg.state()) == before  # judged once, in its own round: no second trust update


def _request(r: int) -> GatherRequest:
    return GatherRequest(
        round_index=r, questions=["q0"], candidates=[["a", "b", "c", "d"]], experts=[[0, 1]],
        domains=["add"], answers=["1"],
    )  # fmt: skip


def test_async_gatherer_keeps_stragglers_and_delivers_their_rewards_later() -> None:
    """Live/emulate path: client 1 answers after the 0.1 s deadline; its rewards come back
    with the next round, and it is not asked again while it works."""

    def responder(value: float, delay: float) -> Any:
        async def fn(req: Any) -> RewardResponse:
            await asyncio.sleep(delay)
            return RewardResponse(req.request_id, "m", tuple(value for _ in req.questions))

        return fn

    transport = InProcessTransport({0: responder(1.0, 0.0), 1: responder(0.5, 0.3)})
    eps = [ClientEndpoint(i, "http://inproc", f"m{i}") for i in (0, 1)]
    policy = RoundPolicy(deadline_s=0.1)
    rng = np.random.default_rng(0)
    with AsyncGatherer(eps, policy, transport, max_staleness=4) as gatherer:
        first = gatherer.gather(_request(0), rng)
        assert first.stats["late"] == 1 and first.outstanding is not None
        assert first.outstanding[0, :, 1].sum() == 2 and not first.outstanding[0, :, 0].any()
        assert gatherer.idle_clients(None) == [0]  # client 1 is still scoring round 0
        time.sleep(0.4)
        assert gatherer.idle_clients(None) is None  # done: everybody may be asked
        second = gatherer.gather(_request(1), rng)
    assert sorted((x.round_index, x.slot, x.value) for x in second.late) == [(0, 1, 0.5)] * 2
    # a synchronous gatherer cancels the straggler: nothing comes back
    with AsyncGatherer(eps, policy, transport) as sync:
        assert sync.gather(_request(0), rng).outstanding is None
        time.sleep(0.4)
        assert sync.gather(_request(1), rng).late == []


def test_busy_stragglers_do_not_crowd_out_on_time_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 7 -> 3 -> 3 -> 0 pattern: without skipping devices that still work on an older
    round, new requests queue behind stragglers and arrive late too."""
    from fedgrpo.experiments.runtimes.sim import timing_competences
    from fedgrpo.scenarios.mapping import sim_config
    from fedgrpo.sim.engine import Simulator, run_simulation

    s = load_scenario(LIBRARY / "async-staleness.yaml", ["sim.reward_source=timing"])
    config = sim_config(s, timing_competences(s))
    fixed = run_simulation(config, 20, seed=0, reward_source="timing")
    monkeypatch.setattr(Simulator, "busy_clients", lambda self: set())
    crowded = run_simulation(config, 20, seed=0, reward_source="timing")
    on_time = sum(fixed.column("answered")), sum(crowded.column("answered"))
    assert on_time[0] > 1.4 * on_time[1]
    late_half = [sum(r.column("answered")[10:]) for r in (fixed, crowded)]
    assert late_half[0] > 1.4 * late_half[1]  # and it does not decay over the run
    assert sum(fixed.column("stale_used")) > sum(crowded.column("stale_used"))
