"""One dispatch and one device-timing model: the simulator and the real side share them.

* the simulator deals candidates with :func:`fedgrpo.rounds.plan_dispatch` (a round's
  shuffles drawn in one call, extras to the best-ranked experts);
* the simulator and the emulation fault proxy time a request with the same
  :func:`fedgrpo.sim.devices.request_timing` / :func:`~fedgrpo.sim.devices.transfer_s`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.experiments.runtimes.fault_proxy import FaultModel, FaultProxy
from fedgrpo.rounds import plan_dispatch
from fedgrpo.sim import ClientSpec, WorkloadSpec, get_profile
from fedgrpo.sim.devices import device_timing, request_timing, transfer_s
from fedgrpo.sim.events import make_devices
from fedgrpo.sim.rng import ClientStream, stream_generator
from fedgrpo.sim.selection import dispatch_round


def test_plan_dispatch_with_order_deals_it_and_draws_nothing() -> None:
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    plan = plan_dispatch(8, [7, 3, 5], "split", rng, order=[4, 0, 6, 1, 7, 2, 5, 3])
    assert plan == {7: [0, 4, 6], 3: [1, 2, 7], 5: [3, 5]}
    assert rng.bit_generator.state == state
    assert plan_dispatch(2, [1, 2, 3], "split", order=[1, 0]) == {1: [1], 2: [0]}
    with pytest.raises(ConfigError, match="permutation"):
        plan_dispatch(3, [1, 2], "split", order=[0, 0, 1])


@pytest.mark.parametrize("g,m", [(8, 2), (7, 3), (2, 4), (5, 1)])
def test_simulator_dispatch_matches_successive_permutations(g: int, m: int) -> None:
    """The round's batched shuffle consumes the server stream like one ``permutation(g)`` per
    question, and each question is dealt in rank order (extras to the first experts)."""
    w = WorkloadSpec(group_size=g, experts_per_question=m)
    experts = [[(q * 7 + j) % 50 for j in range(m + 2)] for q in range(6)]
    got = dispatch_round(experts, w, np.random.default_rng(11))
    ref = np.random.default_rng(11)
    for ex, plan in zip(experts, got):
        perm = ref.permutation(g).tolist()
        k, extra = divmod(g, m)
        want, start = {}, 0
        for j, e in enumerate(ex[:m]):
            size = k + (j < extra)
            if size:
                want[e] = sorted(perm[start : start + size])
            start += size
        assert plan == want and list(plan) == list(want)
    broadcast = WorkloadSpec(group_size=g, experts_per_question=m, dispatch="broadcast")
    assert dispatch_round(experts, broadcast, np.random.default_rng(0)) == [
        {e: list(range(g)) for e in ex[:m]} for ex in experts
    ]


def test_request_timing_formula() -> None:
    p = get_profile("rpi4")
    t = device_timing(p, speed=2.0, decode_tokens=16, tokens_per_unit=300)
    half, compute = request_timing(t, 4, z_rtt=0.5, z_speed=-1.0)
    assert half == pytest.approx(p.rtt_median_s * math.exp(p.rtt_sigma * 0.5) / 2)
    sec = p.overhead_s + 16 / (p.decode_tok_s * 2) + 4 * 300 / (p.prefill_tok_s * 2)
    assert compute == pytest.approx(sec * math.exp(-p.speed_sigma))
    assert transfer_s(half, 1000, t.down_bps) == pytest.approx(
        half + 1000 / (p.down_mbps * 1e6 / 8)
    )
    assert device_timing(p, 1.0, 0, bandwidth_mbps=8).up_bps == 1e6


def test_engine_device_uses_spec_speed_and_bandwidth() -> None:
    spec = ClientSpec(profile="phone-4g", size_class="360m", speed_factor=0.5, bandwidth_mbps=4)
    w = WorkloadSpec()
    other = ClientSpec(profile="phone-4g", size_class="360m", speed_factor=0.5)
    devs = make_devices([spec, other, spec], w, seed=0)
    dev = devs[0]
    want = device_timing(
        spec.device,
        (1100 / 360) * 0.5,
        w.decode_tokens,
        tokens_per_unit=w.question_tokens + w.completion_tokens,
        bandwidth_mbps=4,
    )
    assert dev.timing == want and dev.crash_p == spec.device.crash_prob
    assert devs[2].timing is dev.timing and devs[1].timing.up_bps == 10e6 / 8


def test_fault_proxy_times_requests_with_the_simulator_model() -> None:
    """Same stream, same draws, same formula as the engine (per token instead of per
    candidate)."""
    p = get_profile("phone-wifi")
    model = FaultModel(p, speed=0.7, decode_tokens=8, chars_per_token=4.0)
    proxy = FaultProxy(2, "c2", "http://127.0.0.1:1", model, seed=9)
    s = ClientStream(stream_generator(9, 2, "request"))
    t = device_timing(p, 0.7, 8)
    for chars in (400, 1200, 10):
        z_rtt, z_speed = s.normal(), s.normal()
        crash = (s.uniform(), s.uniform())
        half, compute = request_timing(t, chars / 4.0, z_rtt, z_speed)
        assert proxy._draw(chars) == (half, compute, *crash)


def test_fault_proxy_honours_the_clients_bandwidth_like_the_engine() -> None:
    spec = ClientSpec(profile="phone-4g", size_class="360m", speed_factor=0.5, bandwidth_mbps=4)
    model = FaultModel.from_client_spec(spec, time_scale=0.01)
    proxy = FaultProxy(0, "c0", "http://127.0.0.1:1", model, seed=0)
    engine = make_devices([spec], WorkloadSpec(), seed=0)[0].timing
    assert proxy._timing.down_bps == engine.down_bps == 4e6 / 8
    assert proxy._timing.up_bps == engine.up_bps
