"""Live mode: health checks and clear errors against a real edge service with a token."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fedgrpo.edge.service import start_server
from fedgrpo.edge.service_config import ServiceConfig
from fedgrpo.experiments.runtimes.live import (
    LiveDeviceError,
    check_devices,
    live_devices,
    make_live_gatherer,
)
from fedgrpo.scenarios.schema import Scenario
from fedgrpo.server.gathering.asynchronous import LoopThread
from fedgrpo.server.gathering.base import GatherRequest

TOKEN = "s3cret"
ENV = "FEDGRPO_TEST_LIVE_TOKEN"
SCORED: list[tuple[str, float, float]] = []  # (reward_mode, format_weight, partial_credit) per call


class FakeScorer:
    name = "expert-0"

    def score(
        self, questions: Any, completions: Any, mode: str = "auto", fw: float = 0.0, pc: float = 0.0
    ) -> list[float]:
        SCORED.append((mode, fw, pc))
        return [0.75] * len(questions)

    def competence(self, questions: Any, answers: Any) -> list[float]:
        return [0.0] * len(questions)


@pytest.fixture(scope="module")
def device() -> Iterator[str]:
    loop = LoopThread("test-live-device")
    cfg = ServiceConfig(model_name="expert-0", token=TOKEN)
    runner, port = loop.run(start_server(FakeScorer(), cfg, "127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.run(runner.cleanup())
        loop.stop()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def scenario(urls: list[str], **group: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "live-test",
            "mode": "live",
            "clients": {
                "groups": [
                    {"name": "pi", "count": len(urls), "profile": "rpi4", "urls": urls,
                     "token_env": ENV, **group}
                ]
            },
            "selection": {"M": 1, "selector": "random"},
        }
    )  # fmt: skip


def test_healthy_device_and_model_name_discovery(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, TOKEN)
    s = scenario([device])
    assert check_devices(live_devices(s, {0: "expert-0"})) == ["expert-0"]
    # a different expected name: the device says which model it serves and that one is used
    assert check_devices(live_devices(s, {0: "expert-0-abc123"})) == ["expert-0"]


def test_wrong_or_missing_token_names_the_env_var(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, "not-the-token")
    with pytest.raises(LiveDeviceError) as wrong:
        check_devices(live_devices(scenario([device]), {0: "expert-0"}))
    msg = str(wrong.value)
    assert "'pi-0'" in msg and device in msg and "401" in msg
    assert "token is wrong" in msg and f"${ENV}" in msg

    monkeypatch.delenv(ENV, raising=False)
    with pytest.raises(LiveDeviceError) as missing:
        check_devices(live_devices(scenario([device]), {0: "expert-0"}))
    msg = str(missing.value)
    assert "none was sent" in msg and f"${ENV} (unset or empty)" in msg


def test_unreachable_device_is_named_with_its_url(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, TOKEN)
    dead = closed_port_url()
    with pytest.raises(LiveDeviceError) as err:
        check_devices(live_devices(scenario([device, dead]), {0: "expert-0", 1: "expert-0"}))
    problems = err.value.problems
    assert len(problems) == 1  # the healthy device is fine; only the dead one is reported
    assert "'pi-1'" in problems[0] and dead in problems[0] and "unreachable" in problems[0]


def test_live_gatherer_runs_a_round(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, TOKEN)
    s = scenario([device])
    ctx = SimpleNamespace(scenario=s, clients=s.client_list(), zoo_paths={})
    gatherer, closer = make_live_gatherer(ctx)  # zoo:expert-0 unresolved: name from the device
    try:
        req = GatherRequest(0, ["q"], [["a", "b"]], [[0]], ["add"], ["1"])
        res = gatherer.gather(req, np.random.default_rng(0))
        assert res.rewards.shape == (1, 2, 1) and np.allclose(res.rewards, 0.75)
        assert res.stats["participation"] == {"rpi4": 1}
        assert gatherer.competence([0], ["q"], ["1"]) == {0: [0.0]}
    finally:
        closer()


def test_live_requests_carry_each_groups_reward_mode(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two groups on the same device, different reward settings: each client's request
    carries its own group's, not the first group's."""
    monkeypatch.setenv(ENV, TOKEN)
    base = {"profile": "rpi4", "url": device, "token_env": ENV}
    s = Scenario.model_validate(
        {
            "name": "live-mixed",
            "mode": "live",
            "clients": {
                "groups": [
                    {"name": "a", "reward_mode": "likelihood", **base},
                    {
                        "name": "b",
                        "reward_mode": "format",
                        "format_weight": 0.4,
                        "partial_credit": 0.5,
                        **base,
                    },
                ]
            },
            "selection": {"M": 1, "selector": "random"},
        }
    )
    ctx = SimpleNamespace(scenario=s, clients=s.client_list(), zoo_paths={})
    gatherer, closer = make_live_gatherer(ctx)
    try:
        SCORED.clear()
        req = GatherRequest(
            0, ["q", "r"], [["a", "b"], ["c", "d"]], [[0], [1]], ["add"] * 2, ["1"] * 2
        )
        res = gatherer.gather(req, np.random.default_rng(0))
        assert res.stats["answered"] == 2
        assert sorted(SCORED) == [("format", 0.4, 0.5), ("likelihood", 0.0, 0.0)]
    finally:
        closer()
