"""Every simulator draw derives from (seed, round, client, purpose)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fedgrpo.rounds import RoundPolicy
from fedgrpo.sim import ClientSpec, RoundInput, SimConfig, WorkloadSpec, run_simulation
from fedgrpo.sim.config import AvailabilitySpec
from fedgrpo.sim.rng import ClientStream, CounterGenerator, round_streams

ALWAYS = AvailabilitySpec(kind="always")


def _draws(s: ClientStream, nu: int, nn: int) -> tuple[list[float], list[float]]:
    return s.uniforms(nu), s.normals(nn)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**63),
    rnd=st.integers(0, 10_000),
    others=st.lists(st.integers(0, 10**6), max_size=5),
    prefill=st.integers(0, 80),
)
def test_a_stream_depends_only_on_its_key_not_on_batch_or_prefill(
    seed: int, rnd: int, others: list[int], prefill: int
) -> None:
    clients = [*others, 7]
    batch = round_streams(seed, rnd, clients, "request", [prefill] * len(clients), [prefill] * len(clients))
    alone = round_streams(seed, rnd, [7], "request", [0], [0])[0]
    assert _draws(batch[-1], 150, 150) == _draws(alone, 150, 150)


def test_streams_differ_by_round_client_purpose_and_seed() -> None:
    def first(seed: int, rnd: int, client: int, purpose: str) -> list[float]:
        return round_streams(seed, rnd, [client], purpose, [8])[0].uniforms(8)

    base = first(1, 2, 3, "request")
    for other in (first(9, 2, 3, "request"), first(1, 5, 3, "request"),
                  first(1, 2, 4, "request"), first(1, 2, 3, "reward")):
        assert other != base


def test_counter_draws_are_uniform_and_normal() -> None:
    s = ClientStream(CounterGenerator(12345), block=4096)
    u = np.array(s.uniforms(20_000))
    z = np.array(s.normals(20_000))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.003
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.03
    # the normal tails look Gaussian: P(|z| > 2) = 4.55 %
    assert abs((np.abs(z) > 2).mean() - 0.0455) < 0.006


def _run(ask_client_0_every_round: bool) -> list[dict[str, Any]]:
    """Client 0 is asked in round 4 in both runs, and in rounds 0-3 only in the first."""
    cfg = SimConfig(
        tuple(ClientSpec(profile="phone-4g", availability=ALWAYS) for _ in range(6)),
        policy=RoundPolicy(deadline_s=1e6),
        workload=WorkloadSpec(questions_per_round=2, group_size=4, experts_per_question=1),
    )

    def source(r: int, rng: np.random.Generator) -> RoundInput:
        first = 0 if (r == 4 or ask_client_0_every_round) else 1 + r % 5
        return RoundInput([f"q{r}a", f"q{r}b"], ["add", "add"], None,
                          np.ones((2, 4), dtype=bool), [[first], [5]])

    res = run_simulation(cfg, rounds=5, seed=3, round_source=source, record_requests=True)
    return [r for r in res.requests if r["round"] == 4 and r["client"] == 0]


def test_a_clients_round_draws_do_not_depend_on_its_earlier_rounds() -> None:
    a, b = _run(True), _run(False)
    assert a and len(a) == len(b)
    assert [r["compute_s"] for r in a] == [r["compute_s"] for r in b]
    assert [r["latency_s"] for r in a] == [r["latency_s"] for r in b]
