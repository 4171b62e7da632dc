"""The vectorised timing path (``sim.vectorised``) against the event engine: the same config
and seed give the same per-round records, final assignment statuses, attempt counts and
rewards grids (same draws: ``(seed, round, client, purpose)`` streams, same selection)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.rounds import RoundOutcome, RoundPolicy
from fedgrpo.sim import AvailabilitySpec, SimConfig, WorkloadSpec, run_simulation
from fedgrpo.sim.vectorised import VectorisedSimulator, run_vectorised
from fedgrpo.sim.vserver import STATUS

MIX = {"rpi4": 1, "rpi5": 1, "phone-4g": 1, "phone-5g": 1, "phone-wifi": 1, "laptop": 1}

CASES: dict[str, dict[str, Any]] = {
    "retries": dict(deadline_s=20.0, over_selection=1, max_retries=1),
    "round_quorum": dict(deadline_s=20.0, over_selection=1, round_quorum=0.8, max_retries=1),
    "backoff": dict(
        deadline_s=12.0,
        over_selection=2,
        max_retries=3,
        retry_backoff_s=0.3,
        retry_min_remaining_s=1.0,
    ),
    "no_early_close": dict(deadline_s=10.0, over_selection=1, close_early=False, max_retries=1),
    "broadcast": dict(
        deadline_s=20.0, over_selection=1, max_retries=1, _w=dict(dispatch="broadcast")
    ),
    "uneven_shards_top": dict(
        deadline_s=15.0,
        over_selection=1,
        max_retries=1,
        _w=dict(experts_per_question=3, selector="top"),
    ),
    "availability_kinds": dict(
        deadline_s=15.0, over_selection=1, max_retries=1, _availability=True
    ),
    "tight_update": dict(
        deadline_s=3.0, over_selection=2, max_retries=2, quorum=3, _c=dict(update_s=1.5)
    ),
}


def _config(n: int, spec: dict[str, Any]) -> SimConfig:
    spec = dict(spec)
    w, c, mixed = spec.pop("_w", {}), spec.pop("_c", {}), spec.pop("_availability", False)
    workload = WorkloadSpec(questions_per_round=n // 4, group_size=8, **w)
    cfg = SimConfig.mixed(n, MIX, seed=0, policy=RoundPolicy(**spec), workload=workload, **c)
    if not mixed:
        return cfg
    clients = list(cfg.clients)  # every availability kind, FedScale-style speed and bandwidth
    trace = AvailabilitySpec("trace", intervals=((0, 30), (50, 200)), period_s=300)
    for i in range(0, n, 3):
        clients[i] = replace(clients[i], availability=trace)
    for i in range(1, n, 7):
        clients[i] = replace(clients[i], availability=AvailabilitySpec("markov", 40, 15))
    for i in range(2, n, 11):
        always = AvailabilitySpec("always")
        clients[i] = replace(clients[i], availability=always, speed_factor=0.3, bandwidth_mbps=2.0)
    return replace(cfg, clients=tuple(clients))


def _same(a: Any, b: Any) -> bool:
    """Equal, floats to 1e-9 (np.exp and math.exp may differ in the last bit)."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


@pytest.mark.parametrize("case", list(CASES))
def test_vectorised_matches_event_engine(case: str) -> None:
    cfg = _config(240, CASES[case])
    outs: list[RoundOutcome] = []
    ev = run_simulation(cfg, 6, seed=3, on_round_end=lambda o, rec: outs.append(o) or None)
    vs = VectorisedSimulator(cfg, 3, keep_outcomes=True)
    vr = vs.run(6)
    assert len(vr.rounds) == len(ev.rounds) == 6
    for r, (e, v) in enumerate(zip(ev.rounds, vr.rounds)):
        bad = {k: (e[k], v.get(k)) for k in e if not _same(e[k], v.get(k))}
        assert not bad, f"{case} round {r}: {bad}"
        assert v.keys() == e.keys()
        got = vs.outcomes[r]
        assert [s.value for s in outs[r].statuses] == [STATUS[i] for i in got["status"]]
        assert list(outs[r].attempt_counts) == got["attempts"].tolist()
        np.testing.assert_array_equal(outs[r].rewards, got["rewards"])
        np.testing.assert_array_equal(outs[r].experts, got["experts"])
    # the comparison has teeth: the cases exercise what they are named after
    total = {k: sum(rec[k] for rec in vr.rounds) for k in ("retries", "cancelled", "ignored")}
    assert total["retries"] > 0 and total["cancelled"] > 0, total


def test_vectorised_differs_with_the_seed() -> None:
    cfg = _config(240, CASES["retries"])
    a, b = run_vectorised(cfg, 3, seed=0), run_vectorised(cfg, 3, seed=1)
    assert [r["t_close"] for r in a.rounds] != [r["t_close"] for r in b.rounds]


def test_vectorised_rejects_what_it_does_not_model() -> None:
    with pytest.raises(ConfigError, match="async"):
        VectorisedSimulator(_config(40, CASES["retries"] | {"_c": dict(mode="async")}))
    with pytest.raises(ConfigError, match="cancel_queued"):
        VectorisedSimulator(_config(40, CASES["retries"] | {"_c": dict(cancel_queued=False)}))


def test_stream_uniforms_are_numpys_own() -> None:
    """sim.vpcg runs SeedSequence + PCG64 over arrays: bit for bit numpy's generator."""
    from fedgrpo.sim.rng import stream_generator
    from fedgrpo.sim.vpcg import stream_uniforms

    clients = np.array([0, 1, 2, 17, 99_999, 2**31 + 3])
    for seed in (0, 3, 2**40 + 5):
        got = stream_uniforms(seed, clients, 1, 20)
        want = [stream_generator(seed, int(c), "availability").random(20) for c in clients]
        np.testing.assert_array_equal(got, np.array(want))


def test_availability_table_matches_the_chains() -> None:
    """sim.vavail answers online_until over arrays exactly as each client's own process,
    also for times far past the first drawn windows (rows are redrawn further)."""
    from fedgrpo.sim.vavail import AvailabilityTable

    cfg = SimConfig.mixed(600, {"rpi4": 1, "phone-4g": 1, "jetson": 1, "rpi-zero2": 1})
    table = AvailabilityTable(cfg.clients, 5)
    table.prefill()
    rng = np.random.default_rng(1)
    chains = [c.availability.build(c.device, 5, i) for i, c in enumerate(cfg.clients)]
    for scale in (30.0, 3000.0, 30_000.0):
        cl, t = rng.integers(0, 600, 4000), rng.uniform(0, scale, 4000)
        want = [chains[c].online_until(x) for c, x in zip(cl.tolist(), t.tolist())]
        got = table.online_until(cl, t)
        np.testing.assert_array_equal(got, [np.nan if u is None else u for u in want])


def test_scenario_option_and_its_check() -> None:
    """``sim.engine: vectorised`` is a timing-only option; with model rewards the scenario
    error names the field."""
    from pathlib import Path

    from fedgrpo.scenarios.loader import load_raw, validate_dict
    from fedgrpo.scenarios.schema import ScenarioError

    lib = Path(__file__).resolve().parents[1] / "scenarios"
    ok = validate_dict(load_raw(lib / "rpi-fleet.yaml", ["sim.engine=vectorised"]), "rpi-fleet")
    assert ok.sim.engine == "vectorised"
    with pytest.raises(ScenarioError, match=r"sim\.engine"):
        validate_dict(load_raw(lib / "quickstart.yaml", ["sim.engine=vectorised"]), "quickstart")


@pytest.mark.parametrize("case", ["retries", "availability_kinds", "broadcast"])
def test_pipelined_rounds_equal_rounds_one_by_one(case: str) -> None:
    """The worker thread (next round drawn ahead, last record written behind) changes
    nothing: the same records and outcomes as the rounds run one after another."""
    cfg = _config(240, CASES[case])
    on = VectorisedSimulator(cfg, 5, keep_outcomes=True, pipeline=True)
    off = VectorisedSimulator(cfg, 5, keep_outcomes=True, pipeline=False)
    a, b = on.run(5), off.run(5)
    assert a.rounds == b.rounds
    for x, y in zip(on.outcomes, off.outcomes):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert on.t == off.t and np.array_equal(on.free_at, off.free_at)


def test_first_sends_keep_arrival_order_when_the_send_time_rounds_them_equal() -> None:
    """Arrivals ordered by uplink seconds, but two on one device become equal once the send
    time is added: the order falls back to (client, arrival, index)."""
    from fedgrpo.sim.vround import Attempts, sorted_by
    from fedgrpo.sim.vserver import _arrival_order

    up = np.array([1e-17, 0.0, 5.0])  # 1.0 + 1e-17 == 1.0 + 0.0
    cl = np.array([3, 3, 1])
    z = np.zeros(3)
    att = Attempts(*(z,) * 7, 1.0 + up, z, cl, z, z.astype(bool), z)
    by_up = sorted_by(cl, up)
    assert by_up.tolist() == [2, 1, 0]
    o, c, a = _arrival_order(att, by_up)
    assert o.tolist() == sorted_by(cl, 1.0 + up).tolist() == [2, 0, 1]
    assert c.tolist() == [1, 3, 3] and a.tolist() == [6.0, 1.0, 1.0]
