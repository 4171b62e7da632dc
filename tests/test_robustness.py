"""Byzantine behaviours, trust-weighted aggregation and local differential privacy of rewards:
the pure math, the device's budget refusal on a real edge server, and a tiny end-to-end sim."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedgrpo.edge.behaviour import Behaviour
from fedgrpo.edge.device_rewards import DeviceRewards, DeviceScorer, GeneratorDraws
from fedgrpo.edge.privacy import PrivacyAccountant, PrivacySpec, debias, privatise, reward_range
from fedgrpo.server.grpo.trust import RoundAggregator, leave_one_out_agreement, trust_weights
from fedgrpo.sim.rng import round_streams


def _draws(seed: int = 0, n: int = 0) -> Any:
    return round_streams(seed, 0, [0], "reward", [n], [n])[0]


# --------------------------------------------------------------------------- behaviours


def test_behaviours_statistics() -> None:
    rng = np.random.default_rng(0)
    honest = (rng.random(4000) < 0.4).astype(float).tolist()
    qs = [("1+2" if i % 2 else "sort 31") for i in range(len(honest))]
    h = np.array(honest)

    def run(kind: str, **kw: Any) -> np.ndarray:
        return np.array(Behaviour(kind, **kw).apply(qs, honest, _draws(1)))

    assert np.array_equal(run("honest"), h)
    assert np.array_equal(run("inverted"), 1 - h)
    assert np.all(run("always_approve") == 1.0)
    rand = run("random")
    assert abs(rand.mean() - 0.5) < 0.03 and abs(np.corrcoef(rand, h)[0, 1]) < 0.05
    col = run("colluding", target=r"\+")
    odd = np.arange(len(h)) % 2 == 1
    assert np.array_equal(col[odd], 1 - h[odd]) and np.array_equal(col[~odd], h[~odd])
    shift = run("small_shift", strength=0.2)
    assert abs((shift != h).mean() - 0.2) < 0.025  # inside an honest judge's error rate
    # every behaviour consumes exactly one uniform per value: the streams stay aligned
    for kind in ("honest", "inverted", "random"):
        s = _draws(2)
        Behaviour(kind).apply(qs[:5], honest[:5], s)
        assert s.uniforms(1) == _draws(2).uniforms(6)[5:]
    with pytest.raises(ValueError, match="needs a target"):
        Behaviour("colluding")


# --------------------------------------------------------------------------- LDP


@pytest.mark.parametrize("mechanism", ["randomised_response", "laplace", "gaussian"])
def test_ldp_is_unbiased_after_debiasing(mechanism: str) -> None:
    spec = PrivacySpec(mechanism, epsilon=1.0)
    values = [0.0, 0.3, 1.0] * 6000
    released = np.array(privatise(values, spec, _draws(3)))
    est = np.asarray(debias(released, spec)).reshape(-1, 3).mean(axis=0)
    se = np.asarray(debias(released, spec)).reshape(-1, 3).std(axis=0) / math.sqrt(6000)
    assert np.all(np.abs(est - [0.0, 0.3, 1.0]) < 4 * se), (est, se)
    raw = released.reshape(-1, 3).mean(axis=0)
    if mechanism == "randomised_response":
        assert set(np.unique(released)) <= {0.0, 1.0}
        assert abs(raw[0] - spec.flip_probability) < 0.02  # biased before debiasing
    lo, hi = reward_range(spec)
    assert released.min() >= lo and released.max() <= hi


def test_accountant_composes_and_refuses_past_budget() -> None:
    spec = PrivacySpec("laplace", epsilon=0.5, budget=4.0)
    acc = PrivacyAccountant(spec)
    acc.charge(2)
    e2 = acc.epsilon()
    assert 0.9 < e2 <= 1.01  # two pure 0.5-DP releases: ε = 1 (RDP's conversion: +0.2 %)
    acc.charge(3)
    assert acc.epsilon() > e2 and acc.released == 5
    with pytest.raises(Exception, match="privacy budget spent"):
        acc.charge(100)
    assert acc.released == 5  # a refused release is not charged
    rr = PrivacyAccountant(PrivacySpec("randomised_response", epsilon=1.0))
    rr.charge(1)
    assert abs(rr.epsilon() - 1.0) < 0.05


# --------------------------------------------------------------------------- aggregation


def test_leave_one_out_agreement_and_weights() -> None:
    truth = np.array([1, 0, 1, 0, 1, 0], dtype=float)
    table = np.stack([truth, truth, 1 - truth], axis=1)  # two honest, one inverted
    agree, count = leave_one_out_agreement(table, np.ones(3))
    assert list(count) == [6, 6, 6]
    assert agree[0] == pytest.approx(0.5) and agree[2] == pytest.approx(0.0)
    w = trust_weights(np.array([0.9, 0.8, 0.3, 0.5]), exclude_below=0.2)
    assert w[0] == 1.0 and w[1] == pytest.approx(0.75) and w[2] == 0.0 and w[3] == 0.0


def _round(rng: np.random.Generator, experts: list[list[int]], liar: int) -> np.ndarray:
    truth = (rng.random((len(experts), 8)) < 0.4).astype(float)
    out = np.full((len(experts), 8, 3), np.nan)
    for b, ranked in enumerate(experts):
        for e, k in enumerate(ranked):
            noisy = np.where(rng.random(8) < 0.1, 1 - truth[b], truth[b])
            out[b, :, e] = 1 - truth[b] if k == liar else noisy
    return out, truth


def test_trust_excludes_an_inverted_expert_and_mean_does_not() -> None:
    rng = np.random.default_rng(0)
    agg = RoundAggregator("trust", 5, competence=lambda: np.full((5, 10), 0.6))
    errs_trust, errs_mean = [], []
    for _ in range(20):
        experts = [list(rng.choice(5, 3, replace=False)) for _ in range(6)]
        rewards, truth = _round(rng, experts, liar=1)
        combined = agg(rewards, experts)
        mean = RoundAggregator("mean", 5)(rewards, experts)
        assert not np.isnan(mean).any()
        ok = ~np.isnan(combined)
        errs_trust.append(np.abs(combined[ok] - truth[ok]).mean())
        errs_mean.append(np.abs(mean - truth).mean())
    assert agg.last_weights[1] == 0.0 and min(np.delete(agg.last_weights, 1)) > 0.5
    assert np.mean(errs_trust[-5:]) < 0.1 < np.mean(errs_mean[-5:])
    assert agg.record()["trust_excluded"] == 1


def test_aggregator_debiases_randomised_response() -> None:
    spec = PrivacySpec("randomised_response", epsilon=1.0)
    rewards = np.full((1, 4, 2), 1.0)
    out = RoundAggregator("mean", 2, privacy=[spec, PrivacySpec()])(rewards, [[0, 1]])
    expect = ((1 - spec.flip_probability) / (1 - 2 * spec.flip_probability) + 1.0) / 2
    assert np.allclose(out, expect)


# --------------------------------------------------------------------------- real edge server


class _Judge:
    name = "judge"

    def score(self, questions: Any, completions: Any, reward_mode: str = "auto",
              format_weight: float = 0.0, partial_credit: float = 0.0) -> list[float]:  # fmt: skip
        return [1.0 if c == "right" else 0.0 for c in completions]

    def competence(self, questions: Any, reference_answers: Any) -> list[float]:
        return [1.0] * len(questions)


def test_edge_server_inverts_privatises_and_refuses_past_budget() -> None:
    from aiohttp import ClientSession

    from fedgrpo.edge.service import start_server, stop_server
    from fedgrpo.edge.service_config import ServiceConfig

    device = DeviceRewards(
        Behaviour("inverted"), PrivacySpec("randomised_response", epsilon=8.0, budget=20.0)
    )
    scorer = DeviceScorer(_Judge(), device, GeneratorDraws(0))
    config = ServiceConfig(model_name="judge", drain_grace=0.0, shutdown_timeout=2.0)
    body = {
        "id": "r1",
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [2], "data": ["1+1", "2+2"]},
            {"name": "completion", "datatype": "BYTES", "shape": [2], "data": ["right", "no"]},
        ],
    }

    async def main() -> list[tuple[int, Any]]:
        runner, port = await start_server(scorer, config)
        out = []
        try:
            async with ClientSession() as http:
                for _ in range(3):
                    url = f"http://127.0.0.1:{port}/v2/models/judge/infer"
                    async with http.post(url, json=body) as resp:
                        out.append((resp.status, await resp.json()))
        finally:
            await stop_server(runner, config)
        return out

    replies = asyncio.run(main())
    assert replies[0][0] == 200 and replies[0][1]["outputs"][0]["data"] == [0.0, 1.0]
    assert [status for status, _ in replies][-1] == 403
    err = replies[-1][1]["error"]
    assert "privacy budget spent" in err and "budget 20" in err, json.dumps(replies[-1][1])


# --------------------------------------------------------------------------- end to end


def test_tiny_sim_run_with_liars_trust_and_private_rewards(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sim rounds through the real runner on a tiny zoo (two domains, three clients): one
    inverted client, trust aggregation, randomised response with a budget that runs out."""

    from tiny_zoo import use_tiny_zoo

    from fedgrpo.experiments.runner import run_scenario
    from fedgrpo.scenarios.loader import load_scenario

    use_tiny_zoo(monkeypatch, tmp_path / "models", weak_steps=3)
    g0 = "clients.groups.0"
    s = load_scenario(
        Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.yaml",
        [
            "rounds=2", "selection.aux_size=6", "selection.L=3", "selection.M=3",
            "tasks.domains=[add,sub]", f"{g0}.count=3", "tasks.partition.num_clients=2",
            "server.grpo.questions_per_round=2", "server.grpo.group_size=4",
            "server.grpo.max_new_tokens=8", "tasks.train_per_domain=40",
            "tasks.test_per_domain=4", "tasks.aux_pool_per_domain=4", "eval.per_domain=2",
            "checkpoint.every=0", "outputs.progress=false", "outputs.plots=false",
            "outputs.save_model=false", "server.grpo.reward_combine=trust",
            f"{g0}.behaviour.kind=inverted", f"{g0}.behaviour.fraction=0.34",
            f"{g0}.privacy.mechanism=randomised_response", f"{g0}.privacy.epsilon=2",
            f"{g0}.privacy.budget=30",
        ],
    )  # fmt: skip
    summary = run_scenario(s, tmp_path / "run")
    assert summary["status"] == "finished"
    assert summary["behaviours"].count("inverted") == 1
    weights = summary["final_trust_weights"]
    assert len(weights) == 3 and all(0.0 <= w <= 1.0 for w in weights)
    spent = [p["epsilon"] for p in summary["privacy"]]
    assert max(spent) <= 30 and sum(p["released"] for p in summary["privacy"]) > 0
    rounds = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in rounds if r.get("event") == "round"]
    assert all("trust_weights" in r for r in rounds)
    assert all(r["loss"] is None or math.isfinite(r["loss"]) for r in rounds)
    assert sum(r.get("failed", 0) for r in rounds) > 0  # spent devices refused in round 2
