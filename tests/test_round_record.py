"""One per-round record: every gatherer returns the same keys with the same meanings."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedgrpo.edge.protocol import CompetenceRequest, RewardResponse, ScoreRequest
from fedgrpo.experiments.runtimes.sim import outcome_stats
from fedgrpo.rounds import RoundOutcome, RoundPolicy, RoundStats, round_stats
from fedgrpo.rounds.record import flat
from fedgrpo.server.gathering.base import CentralGatherer, GatherRequest
from fedgrpo.server.gathering.inprocess import DirectGatherer
from fedgrpo.sim import ClientSpec, SimConfig, WorkloadSpec, run_simulation
from fedgrpo.sim.config import AvailabilitySpec

KEYS = set(RoundStats.__annotations__)
REQ = GatherRequest(
    round_index=0,
    questions=["1+1", "2+2"],
    candidates=[["answer: 2", "answer: 3"], ["answer: 4", "answer: 5"]],
    experts=[[0, 1], [1, 0]],
    domains=["add", "add"],
    answers=["2", "4"],
)


def _scorer(fail: bool) -> Any:
    def score(request: ScoreRequest | CompetenceRequest) -> RewardResponse:
        if fail:
            raise RuntimeError("device crashed")
        return RewardResponse(request.request_id, "m", tuple(1.0 for _ in range(len(request))))

    return score


def test_central_in_process_and_simulated_rounds_share_one_record() -> None:
    central = CentralGatherer().gather(REQ, np.random.default_rng(0)).stats
    with DirectGatherer([_scorer(False), _scorer(True)], policy=RoundPolicy(max_retries=1)) as g:
        direct = g.gather(REQ, np.random.default_rng(0)).stats
    seen: list[tuple[RoundOutcome, dict[str, Any]]] = []
    cfg = SimConfig(
        tuple(
            ClientSpec(profile="laptop", availability=AvailabilitySpec("always")) for _ in range(4)
        ),
        workload=WorkloadSpec(questions_per_round=2, group_size=4),
    )
    run_simulation(cfg, rounds=1, seed=0, on_round_end=lambda o, r: seen.append((o, r)) or None)
    simulated = outcome_stats(*seen[0])
    for stats in (central, direct, simulated):
        assert set(stats) == KEYS
    # the same meanings: 4 assignments (2 questions x 2 experts), client 1 fails once and is
    # re-sent once (a retry, not a second "asked")
    assert direct["asked"] == 4 and direct["answered"] == 2 and direct["failed"] == 2
    assert direct["retries"] == 2 and direct["retried"] == 2
    assert direct["bytes_sent"] > 0 and direct["participation"] == {"client-0": 2}
    assert simulated["asked"] == seen[0][0].counts()["asked"] == seen[0][1]["asked"]
    assert central == round_stats()


def test_flat_puts_mode_specific_numbers_beside_the_common_fields() -> None:
    stats = round_stats({"asked": 3}, bytes_sent=10, virtual_now_s=4.5)
    row = flat(stats)
    assert row["asked"] == 3 and row["virtual_now_s"] == 4.5 and "extra" not in row
    assert set(row) == (KEYS - {"extra"}) | {"virtual_now_s"}
