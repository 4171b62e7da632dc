"""The simulator's speed work must not change what it simulates.

The digests below were computed with the engine *before* its performance changes (fast
event-loop path for request steps, per-client device objects, GC threshold during the run,
enum aliases in RoundState); the same seed must still give the same per-round records,
per-request rows, event count and stale results. Floats are rounded to 10 significant digits
so that a last-ulp difference of the platform's libm does not count as a change.

Re-pinned once on purpose: requests to offline devices are no longer counted in
``bytes_sent`` (they were never transmitted). With that one line reverted the old digests
still match, so nothing else changed.

Re-pinned a second time on purpose: request, reward and server draws now derive from
``(seed, round, client, purpose)`` (``sim.rng.round_streams``) instead of advancing one stream
per client across rounds. The distributions are unchanged (over 6 seeds × 2,000 clients ×
10 rounds: coverage 0.9764 ± 0.0014 before, 0.9750 ± 0.0023 after; crashes 38.0 vs 36.7 per
run); ``tests/test_rng.py`` pins the new property itself.

Re-pinned a third time on purpose, ``async_backoff`` only (issue 14): in async mode a device
still busy with an earlier round's straggler is no longer selected, and stragglers more than
``max_staleness`` rounds old are cancelled. With ``Simulator.busy_clients`` returning nothing
and ``_cancel_too_stale`` a no-op the old digest still matches."""

from __future__ import annotations

import gc
import hashlib
import json
from typing import Any

import pytest

from fedgrpo.rounds import RoundPolicy
from fedgrpo.sim import SimConfig, WorkloadSpec, run_simulation

MIX = {"rpi4": 1, "rpi5": 1, "phone-4g": 1, "phone-5g": 1, "phone-wifi": 1, "laptop": 1}

CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "sync": (
        dict(deadline_s=20.0, over_selection=1, max_retries=1),
        {},
        "4e4635c31f4e32a68f971a7f445e79cd5c9737d2ef64bbe7f30a2abf5fdfed4a",
    ),
    "round_quorum": (
        dict(deadline_s=20.0, over_selection=1, round_quorum=0.8, max_retries=1),
        {},
        "ebcbc5c449ecec2e014bd67c6de44cf202003f2e8bba25ec610837f060b6fb5d",
    ),
    "async_backoff": (
        dict(deadline_s=8.0, over_selection=1, max_retries=2, retry_backoff_s=0.5),
        dict(mode="async", max_staleness=2),
        "7d870c7a16d7f10a8329e4f2639cd98fba97c98ad9a65e2d05ede2e534ab0869",
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
