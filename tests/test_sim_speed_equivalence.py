"""The simulator's speed work must not change what it simulates.

The digests below were computed with the engine *before* its performance changes (fast
event-loop path for request steps, per-client device objects, GC threshold during the run,
enum aliases in RoundState); the same seed must still give the same per-round records,
per-request rows, event count and stale results. Floats are rounded to 10 significant digits
so that a last-ulp difference of the platform's libm does not count as a change."""

from __future__ import annotations

import gc
import hashlib
import json
from typing import Any

import pytest

from server.rounds import RoundPolicy
from sim import SimConfig, WorkloadSpec, run_simulation

MIX = {"rpi4": 1, "rpi5": 1, "phone-4g": 1, "phone-5g": 1, "phone-wifi": 1, "laptop": 1}

CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "sync": (
        dict(deadline_s=20.0, over_selection=0.5, max_retries=1),
        {},
        "741a6caa53a3dce299126c1d3812304d3cb92945857670179e12f83e0158b77d",
    ),
    "round_quorum": (
        dict(deadline_s=20.0, over_selection=0.5, round_quorum=0.8),
        {},
        "7c2037759db90d345ee461cb5f7f530500d753d97a8acfb32edd6c55267b220b",
    ),
    "async_backoff": (
        dict(deadline_s=8.0, over_selection=0.5, max_retries=2, retry_backoff_s=0.5),
        dict(mode="async", max_staleness=2),
        "8b3b9bb541161f91f3a0e09aa73af7e56662e0374787677d884908ab73a54b8d",
    ),
}


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.10g}")
    if isinstance(x, dict):
        return {str(k): _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def _digest(name: str) -> str:
    policy, kwargs, _ = CASES[name]
    cfg = SimConfig.mixed(
        400,
        MIX,
        seed=3,
        policy=RoundPolicy(**policy),
        workload=WorkloadSpec(questions_per_round=100, group_size=8),
        **kwargs,
    )
    res = run_simulation(cfg, rounds=6, seed=5, record_requests=True)
    stale = [
        (s.origin_round, s.used_in_round, s.assignment.assignment_id, s.values) for s in res.stale
    ]
    blob = json.dumps(_rounded([res.rounds, res.requests, res.events, stale]), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@pytest.mark.parametrize("name", list(CASES))
def test_same_seed_same_results_as_before_the_speed_work(name: str) -> None:
    assert _digest(name) == CASES[name][2]


def test_run_restores_the_gc_threshold_and_freeze() -> None:
    before = gc.get_threshold()
    cfg = SimConfig.mixed(50, MIX, seed=0, workload=WorkloadSpec(questions_per_round=10))
    run_simulation(cfg, rounds=2, seed=0)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
