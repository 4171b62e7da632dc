"""AsyncGatherer and the fault proxy against real edge services (aiohttp, loopback).

The services are the real ``edge.service`` app with a stand-in scorer (no model), so these
tests exercise the wire protocol, the round semantics and the injected faults in ~seconds.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedgrpo.edge.service import start_server
from fedgrpo.edge.service_config import ServiceConfig
from fedgrpo.experiments.runtimes.fault_proxy import FaultModel, FaultProxy, ProxyHost
from fedgrpo.rounds import RoundPolicy
from fedgrpo.server.gathering.asynchronous import AsyncGatherer, LoopThread, scale_policy
from fedgrpo.server.gathering.base import GatherRequest
from fedgrpo.server.gathering.transport import ClientEndpoint, HttpTransport
from fedgrpo.sim.config import AvailabilitySpec
from fedgrpo.sim.devices import get_profile

TOKEN = "test-token"


class FakeScorer:
    """Client k scores every candidate (k + 1) / 10; competence: all correct."""

    def __init__(self, k: int) -> None:
        self.name = f"c{k}"
        self.value = (k + 1) / 10

    def score(
        self, questions: Any, completions: Any, mode: str = "auto", fw: float = 0.0, pc: float = 0.0
    ) -> list[float]:
        return [self.value] * len(questions)

    def competence(self, questions: Any, answers: Any) -> list[float]:
        return [1.0] * len(questions)


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[LoopThread, list[str]]]:
    loop = LoopThread("test-edge-services")
    runners, urls = [], []
    try:
        for k in range(3):
            cfg = ServiceConfig(model_name=f"c{k}", token=TOKEN, max_queue=64)
            runner, port = loop.run(start_server(FakeScorer(k), cfg, "127.0.0.1", 0))
            runners.append(runner)
            urls.append(f"http://127.0.0.1:{port}")
        yield loop, urls
    finally:
        for r in runners:
            loop.run(r.cleanup())
        loop.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(b: int = 2, g: int = 4, experts: list[list[int]] | None = None) -> GatherRequest:
    return GatherRequest(
        round_index=0,
        questions=[f"q{i}" for i in range(b)],
        candidates=[[f"cand {i}.{j}" for j in range(g)] for i in range(b)],
        experts=experts or [[0, 1, 2]] * b,
        domains=["add"] * b,
        answers=["1"] * b,
    )


def endpoints(urls: list[str]) -> list[ClientEndpoint]:
    return [ClientEndpoint(k, u, f"c{k}", TOKEN) for k, u in enumerate(urls)]


def test_gather_real_services_rewards_stats_and_competence(services: Any) -> None:
    _, urls = services
    eps = endpoints(urls)
    eps[2] = ClientEndpoint(2, f"http://127.0.0.1:{free_port()}", "c2", TOKEN)  # nobody listens
    with AsyncGatherer(
        eps, RoundPolicy(deadline_s=5.0, max_retries=1), HttpTransport(), labels=["a", "b", "c"]
    ) as gatherer:
        result = gatherer.gather(request(), np.random.default_rng(0))
        r = result.rewards
        assert r.shape == (2, 4, 3)
        # split over 3 primaries: every candidate scored once; client k's slot holds (k+1)/10
        for q in range(2):
            for c in range(4):
                got = [(e, r[q, c, e]) for e in range(3) if not math.isnan(r[q, c, e])]
                assert len(got) <= 1
                for e, v in got:
                    assert e != 2 and v == pytest.approx((e + 1) / 10)
        assert np.isnan(r[:, :, 2]).all()  # unreachable client: missing, never zero
        st = result.stats
        # asked counts assignments (as in sim mode); the re-sends are retries
        assert st["answered"] == 4 and st["failed"] == 2 and st["asked"] == 6
        assert st["retries"] == 2 and st["retried"] == 2  # 1 retry each
        assert st["participation"] == {"a": 2, "b": 2}
        assert st["bytes_sent"] > 0 and st["bytes_received"] > 0
        assert st["duration_s"] < 5.0
        bits = gatherer.competence([0, 1, 2], ["q1", "q2"], ["1", "2"])
        assert bits == {0: [1.0, 1.0], 1: [1.0, 1.0], 2: None}
    assert not gatherer._loop.alive  # closed: the loop thread is gone


def test_over_selection_reserve_and_wrong_token(services: Any) -> None:
    _, urls = services
    eps = endpoints(urls)
    eps[0] = ClientEndpoint(0, urls[0], "c0", "wrong")  # 401 on every request
    policy = RoundPolicy(deadline_s=5.0, over_selection=1, max_retries=0)
    with AsyncGatherer(eps, policy, reserve_per_question=1) as gatherer:
        result = gatherer.gather(request(b=1, experts=[[0, 1, 2]]), np.random.default_rng(1))
    r = result.rewards[0]
    # primary 0 fails (401); the over-selected reserve (client 2) mirrors its shard
    assert np.isnan(r[:, 0]).all()
    assert (~np.isnan(r).any(axis=1)).sum() == 0  # every candidate got a reward
    assert result.stats["failed"] + result.stats["cancelled"] == 1


# --------------------------------------------------------------------------- fault proxy


def exact_profile(**kw: Any) -> Any:
    """rpi4 without randomness in latency: RTT and compute are exact."""
    base = dict(rtt_median_s=0.2, rtt_sigma=0.0, speed_sigma=0.0, overhead_s=0.0, crash_prob=0.0)
    return get_profile("rpi4", **{**base, **kw})


def proxied(
    services: Any, model: FaultModel, clients: int = 1, seed: int = 0
) -> tuple[ProxyHost, list[ClientEndpoint]]:
    _, urls = services
    host = ProxyHost()
    eps = []
    for k in range(clients):
        p = host.add(FaultProxy(k, f"c{k}", urls[k], model, seed))
        eps.append(ClientEndpoint(k, p.url, f"c{k}", TOKEN))
    return host, eps


def test_proxy_delay_is_profile_time_scaled_and_deadline_scales_too(services: Any) -> None:
    # compute: 1000 tok/s; each request has ~ 2 candidates x ~10 chars / 4 = ~6 tokens -> ~0;
    # decode 50 tokens at 2.5 tok/s = 20 s profile time -> 0.2 s at scale 0.01
    model = FaultModel(
        exact_profile(),
        AvailabilitySpec(kind="always"),
        speed=1.0,
        time_scale=0.01,
        decode_tokens=50,
    )
    host, eps = proxied(services, model)
    try:
        policy = RoundPolicy(deadline_s=60.0)
        with AsyncGatherer(eps, scale_policy(policy, 0.01), time_scale=0.01) as g:
            t = time.perf_counter()
            ok = g.gather(request(b=1, experts=[[0]]), np.random.default_rng(0))
            wall = time.perf_counter() - t
        assert not np.isnan(ok.rewards).any()
        assert 0.2 <= wall < 0.6  # 20 s compute + 0.2 s RTT, scaled by 0.01
        assert ok.stats["duration_s"] == pytest.approx(wall / 0.01, rel=0.2)  # profile seconds
        # a 10 s (profile) deadline is shorter than the 20 s compute: the answer is late
        short = scale_policy(RoundPolicy(deadline_s=10.0), 0.01)
        with AsyncGatherer(eps, short, time_scale=0.01) as g:
            late = g.gather(request(b=1, experts=[[0]]), np.random.default_rng(0))
        assert np.isnan(late.rewards).all() and late.stats["late"] == 1
    finally:
        host.stop()


def test_proxy_crash_closes_connection_and_is_counted(services: Any) -> None:
    model = FaultModel(
        exact_profile(crash_prob=1.0), AvailabilitySpec(kind="always"), time_scale=0.01
    )
    host, eps = proxied(services, model, clients=2)
    try:
        policy = RoundPolicy(deadline_s=30.0, max_retries=1)
        with AsyncGatherer(eps, scale_policy(policy, 0.01), extra_stats=host.counters) as g:
            res = g.gather(request(b=2, experts=[[0, 1], [1, 0]]), np.random.default_rng(0))
        assert np.isnan(res.rewards).all()
        assert res.stats["failed"] == 4 and res.stats["retries"] == 4
        assert res.stats["crashed"] == 8 == res.stats["extra"]["injected_crashed"]
    finally:
        host.stop()


def test_proxy_offline_device_fails_after_connect_timeout(services: Any) -> None:
    # offline essentially always (mean on 1e-6 s, mean off 1e9 s)
    offline = AvailabilitySpec(kind="markov", mean_on_s=1e-6, mean_off_s=1e9)
    model = FaultModel(exact_profile(), offline, time_scale=0.01, connect_timeout_s=5.0)
    host, eps = proxied(services, model)
    try:
        with AsyncGatherer(
            eps,
            scale_policy(RoundPolicy(deadline_s=30.0, max_retries=0), 0.01),
            extra_stats=host.counters,
        ) as g:
            t = time.perf_counter()
            res = g.gather(request(b=1, experts=[[0]]), np.random.default_rng(0))
            wall = time.perf_counter() - t
        assert np.isnan(res.rewards).all() and res.stats["failed"] == 1
        assert res.stats["offline"] == 1
        assert 0.05 <= wall < 0.3  # connect timeout 5 s x 0.01, not the 0.3 s deadline
        # the request never reached an (offline) device: no bytes sent, as in sim mode
        assert res.stats["extra"]["injected_offline_bytes"] > 0 and res.stats["bytes_sent"] == 0
    finally:
        host.stop()


def test_proxy_passes_competence_and_reports_dead_upstream(services: Any) -> None:
    model = FaultModel(
        exact_profile(crash_prob=1.0), AvailabilitySpec(kind="always"), time_scale=0.01
    )
    host = ProxyHost()
    try:
        _, urls = services
        good = host.add(FaultProxy(0, "c0", urls[0], model, 0))
        dead = host.add(FaultProxy(1, "c1", f"http://127.0.0.1:{free_port()}", replace(model), 0))
        eps = [ClientEndpoint(0, good.url, "c0", TOKEN), ClientEndpoint(1, dead.url, "c1", TOKEN)]
        with AsyncGatherer(eps, RoundPolicy(deadline_s=2.0)) as g:
            # enrolment is outside timed rounds: no crash injected on competence requests
            assert g.competence([0, 1], ["q"], ["1"]) == {0: [1.0], 1: None}
        assert dead.counters["upstream_down"] == 1
    finally:
        host.stop()


def test_proxy_draws_are_seeded_per_client(services: Any) -> None:
    model = FaultModel(
        get_profile("rpi4", crash_prob=0.5), AvailabilitySpec(kind="always"), time_scale=0.001
    )

    def run(seed: int) -> list[bool]:
        host, eps = proxied(services, model, seed=seed)
        try:
            with AsyncGatherer(eps, RoundPolicy(deadline_s=5.0, max_retries=0)) as g:
                out = []
                for r in range(8):
                    res = g.gather(request(b=1, experts=[[0]]), np.random.default_rng(r))
                    out.append(bool(np.isnan(res.rewards).all()))
            return out
        finally:
            host.stop()

    a, b = run(0), run(0)
    assert a == b and 0 < sum(a) < 8
