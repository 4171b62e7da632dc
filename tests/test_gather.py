"""The asyncio gatherer over the in-process transport and a real loopback aiohttp server."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator

import numpy as np
import pytest
from aiohttp import web

from fedgrpo.edge.protocol import CompetenceRequest, RewardResponse, ScoreRequest
from fedgrpo.errors import ConfigError
from fedgrpo.rounds import AssignmentStatus, RoundPolicy, build_plan, request_builder
from fedgrpo.server.gathering.http import gather_round
from fedgrpo.server.gathering.transport import (
    ClientEndpoint,
    ConnectError,
    HttpStatusError,
    HttpTransport,
    InProcessTransport,
    ResponseProtocolError,
    TransportTimeout,
)

G = 4
Request = ScoreRequest | CompetenceRequest
QUESTIONS = ["27+48", "11+12"]
CANDS = [[f"c{q}{c}\nanswer: {c}" for c in range(G)] for q in range(2)]


def split_plan(
    pairs: list[tuple[int, int]], policy: RoundPolicy, reserve: list[list[int]] | None = None
):
    experts = [[a, b, *(reserve[q] if reserve else [])] for q, (a, b) in enumerate(pairs)]
    dispatch = [{a: [0, 1], b: [2, 3]} for a, b in pairs]
    return build_plan(experts, dispatch, G, policy, round_id="r1")


# --------------------------------------------------------------------------- in-process


def responder(value: float, delay: float = 0.0, name: str = "m"):
    async def fn(req: Request) -> RewardResponse:
        if delay:
            await asyncio.sleep(delay)
        return RewardResponse(req.request_id, name, tuple(value for _ in req.questions))

    return fn


def endpoints(ids: list[int]) -> list[ClientEndpoint]:
    return [ClientEndpoint(i, "http://inproc", f"m{i}") for i in ids]


async def test_inprocess_all_answer_close_early() -> None:
    pol = RoundPolicy(deadline_s=2.0)
    plan = split_plan([(0, 1), (2, 3)], pol)
    tr = InProcessTransport({i: responder(0.25 * i, 0.01) for i in range(4)})
    t0 = time.monotonic()
    out = await gather_round(
        plan, pol, tr, endpoints([0, 1, 2, 3]), request_builder(QUESTIONS, CANDS)
    )
    assert time.monotonic() - t0 < 0.5
    assert out.closed_by == "complete"
    assert out.rewards[:, :, 0].tolist() == [[0.0, 0.0, 0.25, 0.25], [0.5, 0.5, 0.75, 0.75]]
    sent, received = tr.traffic.totals()
    assert sent > 0 and received > 0


async def test_inprocess_straggler_cancelled_at_deadline() -> None:
    pol = RoundPolicy(deadline_s=0.3)
    plan = split_plan([(0, 1)], pol)
    cancelled: list[int] = []

    async def straggler(req: Request) -> RewardResponse:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise
        return RewardResponse(req.request_id, "m", (1.0,) * len(req.questions))

    tr = InProcessTransport({0: responder(1.0), 1: straggler})
    t0 = time.monotonic()
    out = await gather_round(plan, pol, tr, endpoints([0, 1]), request_builder(QUESTIONS, CANDS))
    took = time.monotonic() - t0
    assert 0.28 <= took < 0.6, took
    assert cancelled == [1]
    assert out.closed_by == "deadline"
    st = {r.assignment.client_id: r.status for r in out.assignments}
    assert st == {0: AssignmentStatus.ANSWERED, 1: AssignmentStatus.LATE}
    assert out.candidate_mask.tolist() == [[True, True, False, False]]


async def test_inprocess_retry_same_request_id() -> None:
    pol = RoundPolicy(deadline_s=2.0, max_retries=2)
    plan = split_plan([(0, 1)], pol)
    seen: list[str] = []

    def flaky(req: Request) -> RewardResponse:
        seen.append(req.request_id)
        if len(seen) < 3:
            raise RuntimeError("device busy")
        return RewardResponse(req.request_id, "m", (0.5,) * len(req.questions))

    tr = InProcessTransport({0: responder(1.0), 1: flaky})
    out = await gather_round(plan, pol, tr, endpoints([0, 1]), request_builder(QUESTIONS, CANDS))
    assert seen == ["r1-q0-c1"] * 3
    rep = out.assignments[1]
    assert rep.status is AssignmentStatus.ANSWERED and rep.attempts == 3
    assert rep.failures[0].startswith("client: RuntimeError")
    assert out.counts()["retried"] == 1


async def test_inprocess_over_selection_cancels_slow_extra() -> None:
    pol = RoundPolicy(deadline_s=3.0, over_selection=2)
    plan = split_plan([(0, 1)], pol, reserve=[[2, 3]])
    tr = InProcessTransport(
        {
            0: responder(1.0, 0.01),
            1: responder(1.0, 0.01),
            2: responder(0.0, 10),
            3: responder(0.0, 10),
        }
    )
    t0 = time.monotonic()
    out = await gather_round(
        plan, pol, tr, endpoints([0, 1, 2, 3]), request_builder(QUESTIONS, CANDS)
    )
    assert time.monotonic() - t0 < 1.0
    assert out.closed_by == "complete"
    assert out.counts()["cancelled"] == 2
    assert out.rewards[0, :, 0].tolist() == [1.0] * 4


async def test_missing_endpoint_and_bad_request_id() -> None:
    pol = RoundPolicy(deadline_s=1.0)
    plan = split_plan([(0, 1)], pol)
    tr = InProcessTransport({})
    with pytest.raises(ConfigError, match="client 1"):
        await gather_round(plan, pol, tr, endpoints([0]), request_builder(QUESTIONS, CANDS))

    def bad(a):  # type: ignore[no-untyped-def]
        return ScoreRequest("other", ("q",), ("c",))

    with pytest.raises(ConfigError, match="idempotent"):
        await gather_round(plan, pol, tr, endpoints([0, 1]), bad)


async def test_unknown_client_in_transport_is_connect_failure() -> None:
    pol = RoundPolicy(deadline_s=1.0, max_retries=0)
    plan = split_plan([(0, 1)], pol)
    tr = InProcessTransport({0: responder(1.0)})
    out = await gather_round(plan, pol, tr, endpoints([0, 1]), request_builder(QUESTIONS, CANDS))
    assert out.assignments[1].status is AssignmentStatus.FAILED
    assert out.assignments[1].failures[0].startswith("connect:")


async def test_inprocess_out_of_range_values_never_trusted() -> None:
    pol = RoundPolicy(deadline_s=1.0)
    plan = split_plan([(0, 1)], pol)
    tr = InProcessTransport({0: responder(1.0), 1: responder(7.0)})
    out = await gather_round(plan, pol, tr, endpoints([0, 1]), request_builder(QUESTIONS, CANDS))
    assert out.assignments[1].status is AssignmentStatus.FAILED
    assert np.isnan(out.rewards[0, 2:]).all()


# --------------------------------------------------------------------------- real HTTP


class Device:
    """A tiny OIP v2 server whose behaviour depends on the model name in the path."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.ids: list[str] = []
        self.auth: list[str | None] = []

    async def infer(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.calls[name] += 1
        self.auth.append(request.headers.get("Authorization"))
        body = await request.json()
        self.ids.append(body["id"])
        n = len(body["inputs"][0]["data"])
        values: list[float] = [0.75] * n
        if name == "slow":
            await asyncio.sleep(30)
        elif name == "err500":
            return web.json_response({"error": "scorer exploded"}, status=500)
        elif name == "nan":
            values = [float("nan")] * n
        elif name == "short":
            values = values[:-1]
        elif name == "close":
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0.1)
            return web.Response()
        elif name == "flaky" and self.calls[name] == 1:
            return web.json_response({"error": "warming up"}, status=503)
        elif name == "auth" and request.headers.get("Authorization") != "Bearer s3cret":
            return web.json_response({"error": "bad token"}, status=401)
        out = {
            "model_name": name,
            "model_version": "1",
            "id": body["id"],
            "outputs": [
                {"name": "reward", "datatype": "FP32", "shape": [len(values)], "data": values}
            ],
        }
        return web.Response(text=json.dumps(out), content_type="application/json")


@pytest.fixture
async def device() -> AsyncIterator[tuple[Device, str]]:
    dev = Device()
    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", dev.infer)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield dev, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_http_round_masks_missing_and_cancels_stragglers(device: tuple[Device, str]) -> None:
    _dev, url = device
    names = ["ok", "slow", "err500", "nan", "short", "close"]
    eps = [ClientEndpoint(i, url, n) for i, n in enumerate(names)]
    pol = RoundPolicy(deadline_s=0.6, max_retries=0)
    plan = split_plan([(0, 1), (2, 3), (4, 5)], pol)
    questions = [*QUESTIONS, "5+5"]
    cands = [*CANDS, CANDS[0]]
    async with HttpTransport() as tr:
        t0 = time.monotonic()
        out = await gather_round(plan, pol, tr, eps, request_builder(questions, cands))
        took = time.monotonic() - t0
    assert took < 0.6 + 0.4, took  # ≈ deadline, not the straggler's 30 s
    assert out.closed_by == "deadline"
    st = {names[r.assignment.client_id]: r for r in out.assignments}
    assert st["ok"].status is AssignmentStatus.ANSWERED
    assert st["slow"].status is AssignmentStatus.LATE
    for bad in ("err500", "nan", "short", "close"):
        assert st[bad].status is AssignmentStatus.FAILED, bad
    assert "HTTP 500: scorer exploded" in st["err500"].failures[0]
    assert st["nan"].failures[0].startswith("protocol:")
    assert st["short"].failures[0].startswith("protocol:")
    assert st["close"].failures[0].startswith("connect:")
    mask = out.candidate_mask
    assert mask.tolist() == [[True, True, False, False], [False] * 4, [False] * 4]
    assert out.rewards[0, :2, 0].tolist() == [0.75, 0.75]
    sent, received = tr.traffic.totals()
    assert sent > 0 and received > 0


async def test_http_retry_same_id_and_bearer(device: tuple[Device, str]) -> None:
    dev, url = device
    eps = [ClientEndpoint(0, url, "flaky"), ClientEndpoint(1, url, "auth", token="s3cret")]
    pol = RoundPolicy(deadline_s=3.0, max_retries=1)
    plan = split_plan([(0, 1)], pol)
    async with HttpTransport() as tr:
        out = await gather_round(plan, pol, tr, eps, request_builder(QUESTIONS, CANDS))
    assert out.closed_by == "complete"
    assert dev.calls["flaky"] == 2
    assert dev.ids.count("r1-q0-c0") == 2
    assert (
        out.assignments[0].attempts == 2 and out.assignments[0].status is AssignmentStatus.ANSWERED
    )
    assert "Bearer s3cret" in dev.auth
    assert not np.isnan(out.rewards).any()


async def test_http_transport_errors(device: tuple[Device, str]) -> None:
    _dev, url = device
    req = ScoreRequest("x1", ("1+1",), ("answer: 2",))
    async with HttpTransport() as tr:
        with pytest.raises(HttpStatusError) as e:
            await tr.score(ClientEndpoint(3, url, "auth", token="wrong"), req, 2.0)
        assert e.value.status == 401 and e.value.error == "bad token" and e.value.client_id == 3
        with pytest.raises(TransportTimeout):
            await tr.score(ClientEndpoint(0, url, "slow"), req, 0.2)
        with pytest.raises(ResponseProtocolError, match="finite"):
            await tr.score(ClientEndpoint(0, url, "nan"), req, 2.0)
        resp = await tr.score(ClientEndpoint(0, url, "ok"), req, 2.0)
        assert resp.values == (0.75,) and resp.request_id == "x1"
        # a port nobody listens on: connection refused
        with pytest.raises(ConnectError):
            await tr.score(ClientEndpoint(9, "http://127.0.0.1:9", "ok"), req, 2.0)
        with pytest.raises(ConfigError, match="timeout_s"):
            await tr.score(ClientEndpoint(0, url, "ok"), req, 0.0)
    snap = tr.traffic.snapshot()
    assert snap[0][0] > 0 and snap[0][1] > 0


def test_endpoint_validation() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        ClientEndpoint(0, "127.0.0.1:80", "m")
    with pytest.raises(ConfigError, match="model_name"):
        ClientEndpoint(0, "http://h", "a/b")
    assert ClientEndpoint(0, "http://h:1/", "m").infer_url == "http://h:1/v2/models/m/infer"
