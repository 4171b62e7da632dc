"""Physics of the simulator: deadlines, dropouts, speed, queueing, traces, seeds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgrpo.edge.protocol import ScoreRequest
from fedgrpo.errors import ConfigError
from fedgrpo.rounds import RoundOutcome, RoundPolicy
from fedgrpo.sim import (
    AvailabilitySpec,
    ClientSpec,
    MarkovAvailability,
    ModelRewards,
    RoundInput,
    SimConfig,
    TraceAvailability,
    WorkloadSpec,
    clients_from_fedscale,
    get_profile,
    load_fedscale_capacity,
    load_fedscale_trace,
    run_simulation,
)
from fedgrpo.sim.report import plot_participation, plot_round_duration_cdf, write_csv, write_jsonl
from fedgrpo.sim.rng import ClientStream, stream_generator

DATA = Path(__file__).resolve().parents[1] / "sim" / "data"
ALWAYS = AvailabilitySpec("always")


def clients(n: int, profile: str = "rpi5", **kw: Any) -> tuple[ClientSpec, ...]:
    kw.setdefault("availability", ALWAYS)
    return tuple(ClientSpec(profile=profile, **kw) for _ in range(n))


# --------------------------------------------------------------------------- deadline


def test_deadline_shorter_than_every_service_time_gives_no_update() -> None:
    seen: list[RoundOutcome] = []

    def on_end(out: RoundOutcome, rec: dict[str, Any]) -> dict[str, Any]:
        seen.append(out)
        return {"updated": bool(out.has_signal.any())}

    cfg = SimConfig(clients(20), policy=RoundPolicy(deadline_s=0.001))
    res = run_simulation(cfg, rounds=3, seed=0, on_round_end=on_end)
    assert len(seen) == 3
    for out in seen:
        assert np.isnan(out.rewards).all()
        assert not out.has_signal.any()
        assert np.isnan(out.usable_rewards()).all()
    for rec in res.rounds:
        assert rec["answered"] == 0 and rec["coverage_mean"] == 0.0
        assert rec["closed_by"] == "deadline" and rec["updated"] is False
        assert rec["duration_s"] == pytest.approx(0.001)
        assert rec["late"] == rec["asked"] > 0
    # the requests were still in the uplink at the close: cancelled before any work started
    assert sum(res.column("evals")) == 0


# --------------------------------------------------------------------------- dropout


def _coverage(over: int, crash: float, seed: int) -> float:
    prof = get_profile("rpi5", crash_prob=crash)
    cfg = SimConfig(
        tuple(ClientSpec(profile=prof, availability=ALWAYS) for _ in range(40)),
        policy=RoundPolicy(deadline_s=30.0, over_selection=over, max_retries=0),
        workload=WorkloadSpec(questions_per_round=16),
    )
    res = run_simulation(cfg, rounds=40, seed=seed)
    return float(np.mean(res.column("coverage_mean")))


def test_over_selection_raises_coverage_under_dropout() -> None:
    base = _coverage(0, 0.3, seed=1)
    over = _coverage(2, 0.3, seed=1)
    # split dispatch: a shard is covered unless all its askers drop: ≈ 1-p vs ≈ 1-p²
    assert base == pytest.approx(0.7, abs=0.05)
    assert over == pytest.approx(0.91, abs=0.04)
    assert over > base + 0.1
    assert _coverage(0, 0.0, seed=1) == 1.0


def test_markov_availability_matches_stationary_fraction() -> None:
    stream = ClientStream(stream_generator(3, 0, "availability"))
    av = MarkovAvailability(100.0, 25.0, stream)
    ts = np.linspace(0, 200_000, 20_001)
    online = np.mean([av.online_until(float(t)) is not None for t in ts])
    assert online == pytest.approx(0.8, abs=0.03)
    until = av.online_until(5.0)
    if until is not None:
        assert until > 5.0 and av.online_until(until - 1e-9) is not None


def test_offline_devices_are_counted_and_noticed_after_connect_timeout() -> None:
    cfg = SimConfig(
        clients(10, availability=AvailabilitySpec("markov", mean_on_s=10.0, mean_off_s=10.0)),
        policy=RoundPolicy(deadline_s=60.0, max_retries=0),
        connect_timeout_s=2.0,
    )
    res = run_simulation(cfg, rounds=10, seed=4, record_requests=True)
    assert sum(res.column("offline")) > 0
    rows = [r for r in res.requests if r["event"] == "offline"]
    assert rows and all(r["latency_s"] == pytest.approx(2.0) for r in rows)


def test_requests_to_offline_devices_are_not_counted_as_sent() -> None:
    def run(mean_off_s: float) -> Any:
        av = AvailabilitySpec("markov", mean_on_s=1e-3, mean_off_s=mean_off_s)  # ~always off
        cfg = SimConfig(
            clients(6, availability=av), policy=RoundPolicy(deadline_s=60.0, max_retries=0)
        )
        return run_simulation(cfg, rounds=4, seed=1)

    off = run(1e9)
    assert sum(off.column("offline")) == sum(off.column("asked")) > 0
    assert sum(off.column("bytes_sent")) == 0  # nothing was ever transmitted
    on = run_simulation(
        SimConfig(clients(6), policy=RoundPolicy(deadline_s=60.0, max_retries=0)), rounds=4, seed=1
    )
    assert sum(on.column("bytes_sent")) > 0


# --------------------------------------------------------------------------- speed


def _latencies(profile: str, size_class: str = "135m", seed: int = 0) -> np.ndarray:
    cfg = SimConfig(
        clients(16, profile, size_class=size_class),
        policy=RoundPolicy(deadline_s=1e6),
        workload=WorkloadSpec(questions_per_round=4),
    )
    res = run_simulation(cfg, rounds=20, seed=seed, record_requests=True)
    return np.array([r["latency_s"] for r in res.requests if r["event"] == "accepted"])


@pytest.mark.parametrize(
    ("slow", "fast"),
    [(("rpi4", "135m"), ("rpi5", "135m")), (("rpi5", "1b"), ("rpi5", "135m")),
     (("rpi-zero2", "135m"), ("rpi4", "135m")), (("rpi4", "tiny"), ("laptop", "tiny"))],
)  # fmt: skip
def test_slower_profile_is_never_faster_in_distribution(
    slow: tuple[str, str], fast: tuple[str, str]
) -> None:
    s, f = _latencies(*slow), _latencies(*fast)
    qs = np.linspace(0.05, 0.95, 10)
    assert (np.quantile(s, qs) >= np.quantile(f, qs)).all()
    assert np.median(s) > np.median(f)


def test_queueing_delays_a_second_request_on_one_device() -> None:
    # two questions, M=1, "top" selection → both go to client 0 (most competent)
    prof = get_profile("rpi4", speed_sigma=0.0, crash_prob=0.0)
    specs = (
        ClientSpec(profile=prof, competence=0.9, availability=ALWAYS),
        ClientSpec(profile=prof, competence=0.5, availability=ALWAYS),
    )
    cfg = SimConfig(
        specs,
        policy=RoundPolicy(deadline_s=1e4),
        workload=WorkloadSpec(
            questions_per_round=2, experts_per_question=1, selector="top", domains=("add",)
        ),
    )
    res = run_simulation(cfg, rounds=1, seed=0, record_requests=True)
    rows = sorted((r for r in res.requests if r["event"] == "accepted"), key=lambda r: r["t"])
    assert [r["client"] for r in rows] == [0, 0]
    first, second = rows
    assert first["queue_s"] == pytest.approx(0.0, abs=0.05)
    assert second["queue_s"] == pytest.approx(first["compute_s"], rel=0.1)
    assert second["latency_s"] > first["latency_s"] + 0.9 * first["compute_s"]


# --------------------------------------------------------------------------- traces


def test_fedscale_files_load_pickle_and_json_alike() -> None:
    caps = load_fedscale_capacity(DATA / "client_device_capacity_sample")
    assert caps == load_fedscale_capacity(DATA / "client_device_capacity_sample.json")
    assert caps[2].computation_ms == 200.0 and caps[3].communication_kbps == 80000.0
    traces = load_fedscale_trace(DATA / "client_behave_trace_sample")
    jtraces = load_fedscale_trace(DATA / "client_behave_trace_sample.json")
    for t in (50.0, 150.0, 450.0, 650.0, 1150.0, 1650.0):
        assert traces[2].online_until(t) == jtraces[2].online_until(t)
    assert traces[2].online_until(50.0) is None
    assert traces[2].online_until(150.0) == 300.0
    assert traces[2].online_until(1150.0) == 1300.0  # periodic
    assert traces[3].online_until(10.0) is None
    assert traces[4].online_until(800.0) == 1500.0  # runs across the period boundary
    assert traces[1].online_until(123.0) is not None


def test_fedscale_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    import pickle

    bad = tmp_path / "trace"
    bad.write_bytes(pickle.dumps({1: {"active": [0], "inactive": [1], "finish_time": Path("x")}}))
    with pytest.raises(ConfigError, match="only plain"):
        load_fedscale_trace(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_fedscale_trace(tmp_path / "nope")


def test_fedscale_traces_drive_availability() -> None:
    specs = clients_from_fedscale(
        DATA / "client_device_capacity_sample", DATA / "client_behave_trace_sample", "rpi5"
    )
    assert len(specs) == 4
    assert specs[1].speed_factor == pytest.approx(0.5)  # 200 ms/sample vs median 100
    assert specs[0].bandwidth_mbps == pytest.approx(20.0)
    cfg = SimConfig(
        specs,
        policy=RoundPolicy(deadline_s=20.0, max_retries=0),
        workload=WorkloadSpec(questions_per_round=4, experts_per_question=1),
        connect_timeout_s=1.0,
        update_s=10.0,
    )
    res = run_simulation(cfg, rounds=30, seed=2, record_requests=True)
    by_client: dict[int, set[str]] = {}
    for r in res.requests:
        by_client.setdefault(r["client"], set()).add(r["event"])
    assert by_client[0] == {"accepted"}  # always online
    # client 3 (index 2) is online only 40–60 s of each 1000 s: mostly offline
    assert "offline" in by_client[2]
    # every offline event happened at a time the trace says offline
    tr = load_fedscale_trace(DATA / "client_behave_trace_sample")
    ids = sorted(tr)
    for r in res.requests:
        if r["event"] == "offline":  # arrived (ms after sending) while the trace says offline
            until = tr[ids[r["client"]]].online_until(r["t_sent"])
            assert until is None or until < r["t_sent"] + 0.2
    assert sum(res.column("offline")) > 0


def test_trace_validation() -> None:
    with pytest.raises(ConfigError, match="beyond the period"):
        TraceAvailability([(0, 20)], period=10)
    with pytest.raises(ConfigError, match="start <= end"):
        TraceAvailability([(5, 1)])
    t = TraceAvailability([(0, 5), (3, 8)])
    assert t.online_until(4.0) == 8.0 and t.online_until(9.0) is None


# --------------------------------------------------------------------------- seeds


def _small(profile_0: str = "rpi5", mode: str = "sync") -> SimConfig:
    specs = list(SimConfig.mixed(30, {"rpi4": 1, "phone-4g": 1, "phone-wifi": 1}, seed=3).clients)
    specs[0] = ClientSpec(profile=profile_0)
    return SimConfig(
        tuple(specs),
        policy=RoundPolicy(deadline_s=8.0, over_selection=1, max_retries=1),
        workload=WorkloadSpec(questions_per_round=6),
        mode=mode,
    )


def test_determinism_per_seed() -> None:
    a = run_simulation(_small(), rounds=8, seed=11, record_requests=True)
    b = run_simulation(_small(), rounds=8, seed=11, record_requests=True)
    c = run_simulation(_small(), rounds=8, seed=12, record_requests=True)
    assert a.rounds == b.rounds and a.requests == b.requests
    assert a.rounds != c.rounds


def test_changing_one_client_does_not_change_others_draws() -> None:
    cfg_a = _small("rpi5")
    cfg_b = _small("laptop")
    cfg_a = SimConfig(cfg_a.clients, RoundPolicy(deadline_s=1e6), cfg_a.workload)
    cfg_b = SimConfig(cfg_b.clients, RoundPolicy(deadline_s=1e6), cfg_b.workload)
    a = run_simulation(cfg_a, rounds=6, seed=5, record_requests=True)
    b = run_simulation(cfg_b, rounds=6, seed=5, record_requests=True)

    def draws(res: Any) -> dict[tuple[str, int], float]:
        return {
            (r["assignment_id"], r["attempt"]): r["compute_s"]
            for r in res.requests
            if r["client"] != 0
        }

    da, db = draws(a), draws(b)
    common = set(da) & set(db)
    assert len(common) > 20
    assert all(da[k] == db[k] for k in common)
    c0a = [r["compute_s"] for r in a.requests if r["client"] == 0]
    c0b = [r["compute_s"] for r in b.requests if r["client"] == 0]
    assert c0a != c0b


# --------------------------------------------------------------------------- async, hooks


def test_async_mode_uses_stale_results_within_max_staleness() -> None:
    prof = get_profile("rpi4", speed_sigma=0.5)

    def cfg(mode: str, staleness: int) -> SimConfig:
        return SimConfig(
            tuple(ClientSpec(profile=prof, availability=ALWAYS) for _ in range(12)),
            policy=RoundPolicy(deadline_s=2.5),
            workload=WorkloadSpec(questions_per_round=6),
            mode=mode,
            max_staleness=staleness,
        )

    sync = run_simulation(cfg("sync", 1), rounds=10, seed=1)
    asy = run_simulation(cfg("async", 2), rounds=10, seed=1)
    strict = run_simulation(cfg("async", 0), rounds=10, seed=1)
    assert sum(sync.column("stale_used")) == 0
    assert sum(asy.column("stale_used")) > 0
    assert all(1 <= s.staleness <= 2 for s in asy.stale)
    assert sum(strict.column("stale_used")) == 0 and sum(strict.column("stale_dropped")) > 0
    # async turns straggler work into (stale) signal that sync throws away
    used_async = sum(asy.column("answered")) + sum(asy.column("stale_used"))
    assert used_async > sum(sync.column("answered"))


def test_model_in_the_loop_hook_and_round_end_metrics() -> None:
    calls: list[tuple[int, ScoreRequest]] = []

    def reward_fn(client_id: int, request: ScoreRequest) -> list[float]:
        calls.append((client_id, request))
        return [1.0 if c.endswith("answer: 2") else 0.0 for c in request.completions]

    def source(r: int, rng: np.random.Generator) -> RoundInput:
        cands = [["answer: 2", "answer: 3", "answer: 2", "answer: 5"]]
        return RoundInput(["1+1"], ["add"], cands, experts=[[1, 2]])

    def on_end(out: RoundOutcome, rec: dict[str, Any]) -> dict[str, Any]:
        return {"accuracy": float(np.nanmean(out.rewards))}

    cfg = SimConfig(
        clients(3),
        policy=RoundPolicy(deadline_s=100.0),
        workload=WorkloadSpec(questions_per_round=1, group_size=4),
    )
    res = run_simulation(
        cfg,
        2,
        seed=0,
        reward_source=ModelRewards(reward_fn),
        round_source=source,
        on_round_end=on_end,
    )
    assert {c for c, _ in calls} == {1, 2}
    assert all(req.questions[0] == "1+1" for _, req in calls)
    assert res.rounds[0]["accuracy"] == pytest.approx(0.5)
    assert res.rounds[0]["bytes_sent"] > 0


# --------------------------------------------------------------------------- config, reports


def test_config_validation_names_fields() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        ClientSpec(profile="toaster")
    with pytest.raises(ConfigError, match="size class"):
        ClientSpec(size_class="70b")
    with pytest.raises(ConfigError, match="competence"):
        ClientSpec(competence=1.5)
    with pytest.raises(ConfigError, match="crash_prob"):
        get_profile("rpi4", crash_prob=2.0)
    with pytest.raises(ConfigError, match="unknown field"):
        get_profile("rpi4", warp_speed=1)
    with pytest.raises(ConfigError, match="only 2 clients"):
        SimConfig(clients(2), policy=RoundPolicy(over_selection=2))
    with pytest.raises(ConfigError, match="mode"):
        SimConfig(clients(4), mode="turbo")
    with pytest.raises(ConfigError, match="dispatch"):
        WorkloadSpec(dispatch="scatter")
    with pytest.raises(ConfigError, match="reward_source"):
        run_simulation(SimConfig(clients(4)), 1, reward_source="oracle")


def test_writers_and_plots(tmp_path: Path) -> None:
    res = run_simulation(_small(), rounds=4, seed=0, record_requests=True)
    jl = write_jsonl(res, tmp_path / "r.jsonl")
    lines = [json.loads(x) for x in jl.read_text().splitlines()]
    assert len(lines) == 4 and "coverage" in lines[0] and lines[0]["seed"] == 0
    csv_path = write_csv(res, tmp_path / "r.csv")
    assert csv_path.read_text().splitlines()[0].startswith("round,")
    write_csv(res, tmp_path / "req.csv", requests=True)
    p1 = plot_round_duration_cdf({"a": res}, tmp_path / "cdf.png")
    p2 = plot_participation(res, tmp_path / "part.png")
    assert p1.stat().st_size > 1000 and p2.stat().st_size > 1000
    s = res.summary()
    assert s["rounds"] == 4 and s["evaluations"] > 0
