"""The OIP v2 service on a real loopback port, with a real exported model behind it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import pytest
from edge_reference import TinyBuild

from fedgrpo.edge.answer_table import AnswerTable
from fedgrpo.edge.protocol import ScoreRequest, dumps, encode_request, parse_response
from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig
from fedgrpo.edge.service import start_server
from fedgrpo.edge.service_config import ServiceConfig

pytest_plugins = ["edge_fixtures"]
NAME = "expert-add"


@pytest.fixture(scope="module")
def scorer(gpt2_build: TinyBuild) -> EdgeScorer:
    return EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(variant="fp32", threads=1))


@dataclass
class Gated:
    """A real scorer whose calls wait until released (to hold requests in flight)."""

    inner: EdgeScorer
    release: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    name: str = NAME
    fail: bool = False

    def score(
        self,
        questions: Sequence[str],
        completions: Sequence[str],
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        partial_credit: float = 0.0,
    ) -> list[float]:
        self.started.set()
        if not self.release.wait(timeout=10):
            raise RuntimeError("test gate never released")
        if self.fail:
            raise RuntimeError("secret internal detail")
        return self.inner.score(questions, completions, reward_mode, format_weight, partial_credit)

    def competence(self, questions: Sequence[str], reference_answers: Sequence[str]) -> list[float]:
        return self.inner.competence(questions, reference_answers)


@dataclass
class Server:
    url: str
    session: aiohttp.ClientSession
    runner: object

    def infer_url(self, name: str = NAME) -> str:
        return f"{self.url}/v2/models/{name}/infer"


@contextlib.asynccontextmanager
async def _serve(model: object, config: ServiceConfig) -> AsyncIterator[Server]:
    runner, port = await start_server(model, config, "127.0.0.1", 0)  # type: ignore[arg-type]
    async with aiohttp.ClientSession() as session:
        try:
            yield Server(f"http://127.0.0.1:{port}", session, runner)
        finally:
            await runner.cleanup()


@pytest.fixture
async def server(scorer: EdgeScorer) -> AsyncIterator[Server]:
    async with _serve(scorer, ServiceConfig(model_name=NAME, max_string_chars=200)) as s:
        yield s


def _score_body(build: TinyBuild, mode: str = "likelihood", n: int = 4) -> dict[str, object]:
    items = build.other_items[:n]
    request = ScoreRequest(
        "req-1", tuple(i.question for i in items), tuple(i.completion for i in items), mode
    )
    return encode_request(request)


async def test_health_and_metadata(server: Server) -> None:
    s = server.session
    async with s.get(f"{server.url}/v2/health/live") as r:
        assert r.status == 200 and (await r.json())["live"] is True
    async with s.get(f"{server.url}/v2/health/ready") as r:
        assert r.status == 200
    async with s.get(f"{server.url}/v2") as r:
        assert (await r.json())["name"] == "fedgrpo-edge"
    async with s.get(f"{server.url}/v2/models/{NAME}") as r:
        meta = await r.json()
    assert meta["name"] == NAME and meta["platform"] == "onnxruntime" and meta["versions"] == ["1"]
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in meta["inputs"]} == {
        ("question", "BYTES", (-1,)),
        ("completion", "BYTES", (-1,)),
        ("reference_answer", "BYTES", (-1,)),
    }
    assert {(t["name"], t["datatype"]) for t in meta["outputs"]} == {
        ("reward", "FP32"),
        ("correct", "FP32"),
    }
    async with s.get(f"{server.url}/v2/models/{NAME}/ready") as r:
        assert r.status == 200
    async with s.get(f"{server.url}/v2/models/{NAME}/versions/1/ready") as r:
        assert r.status == 200
    for path in ("/v2/models/other", "/v2/models/other/ready", f"/v2/models/{NAME}/versions/7"):
        async with s.get(server.url + path) as r:
            assert r.status == 404 and "unknown model" in (await r.json())["error"]


async def test_infer_returns_the_scorers_rewards(
    server: Server, scorer: EdgeScorer, gpt2_build: TinyBuild
) -> None:
    body = _score_body(gpt2_build)
    async with server.session.post(
        server.infer_url(), data=dumps(body), headers={"X-Request-Id": "trace-42"}
    ) as r:
        assert r.status == 200
        assert r.headers["X-Request-Id"] == "trace-42"
        response = parse_response(await r.json(), 4, expected_id="req-1")
    inputs = body["inputs"]
    direct = scorer.score(inputs[0]["data"], inputs[1]["data"], "likelihood")  # type: ignore[index]
    np.testing.assert_allclose(response.values, direct, atol=1e-6)
    assert response.model_name == NAME and response.output_name == "reward"


async def test_competence_task(server: Server, scorer: EdgeScorer, gpt2_build: TinyBuild) -> None:
    items = gpt2_build.other_items[:5]
    body = {
        "id": "c1",
        "parameters": {"task": "competence"},
        "inputs": [
            {
                "name": "question",
                "datatype": "BYTES",
                "shape": [5],
                "data": [i.question for i in items],
            },
            {
                "name": "reference_answer",
                "datatype": "BYTES",
                "shape": [5],
                "data": [i.answer for i in items],
            },
        ],
    }
    async with server.session.post(server.infer_url(), json=body) as r:
        assert r.status == 200
        out = (await r.json())["outputs"][0]
    assert out["name"] == "correct" and out["datatype"] == "FP32" and out["shape"] == [5]
    assert out["data"] == scorer.competence([i.question for i in items], [i.answer for i in items])


def _tensor(
    name: str, data: object, shape: object = None, datatype: str = "BYTES"
) -> dict[str, object]:
    n = len(data) if isinstance(data, list) else 1
    return {
        "name": name,
        "datatype": datatype,
        "shape": [n] if shape is None else shape,
        "data": data,
    }


BAD_REQUESTS: list[tuple[str, bytes, int, str]] = [
    ("malformed json", b'{"inputs": [', 400, "malformed JSON"),
    ("not an object", b"[1, 2]", 400, "JSON object"),
    ("non utf-8", b'{"inputs": "\xff\xfe"}', 400, "UTF-8"),
    ("lone surrogate", b'{"inputs": [{"name": "question", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}, {"name": "completion", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}', 400, "surrogate"),
    ("deep nesting", b"[" * 100000 + b"]" * 100000, 400, "JSON"),
    ("no inputs", dumps({"id": "x"}), 400, "inputs"),
    ("wrong id type", dumps({"id": 5, "inputs": [_tensor("question", ["1"])]}), 400, "'id'"),
    ("wrong datatype", dumps({"inputs": [_tensor("question", ["1"], datatype="FP32"), _tensor("completion", ["x"])]}), 422, "BYTES"),
    ("number in data", dumps({"inputs": [_tensor("question", [1]), _tensor("completion", ["x"])]}), 422, "must be a string"),
    ("shape mismatch", dumps({"inputs": [_tensor("question", ["1", "2"], [3]), _tensor("completion", ["x", "y"])]}), 422, "shape"),
    ("length mismatch", dumps({"inputs": [_tensor("question", ["1", "2"]), _tensor("completion", ["x"])]}), 422, "send one per candidate"),
    ("empty batch", dumps({"inputs": [_tensor("question", []), _tensor("completion", [])]}), 422, "empty batch"),
    ("missing input", dumps({"inputs": [_tensor("question", ["1"])]}), 422, "missing ['completion']"),
    ("unknown mode", dumps({"parameters": {"reward_mode": "vibes"}, "inputs": [_tensor("question", ["1"]), _tensor("completion", ["x"])]}), 422, "reward_mode"),
    ("bad weight", dumps({"parameters": {"format_weight": 3}, "inputs": [_tensor("question", ["1"]), _tensor("completion", ["x"])]}), 422, "format_weight"),
    ("bad partial credit", dumps({"parameters": {"partial_credit": -0.5}, "inputs": [_tensor("question", ["1"]), _tensor("completion", ["x"])]}), 422, "partial_credit"),
    ("partial credit not a number", dumps({"parameters": {"partial_credit": "half"}, "inputs": [_tensor("question", ["1"]), _tensor("completion", ["x"])]}), 422, "partial_credit must be a number"),
    ("unknown task", dumps({"parameters": {"task": "train"}, "inputs": [_tensor("question", ["1"])]}), 422, "task"),
    ("unknown output", dumps({"inputs": [_tensor("question", ["1"]), _tensor("completion", ["x"])], "outputs": [{"name": "logits"}]}), 400, "unknown output"),
    ("huge string", dumps({"inputs": [_tensor("question", ["1"]), _tensor("completion", ["x" * 201])]}), 413, "limit is 200"),
    ("too many items", dumps({"inputs": [_tensor("question", ["1"] * 257), _tensor("completion", ["x"] * 257)]}), 413, "at most 256"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "payload", "status", "fragment"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
async def test_bad_requests_get_json_errors(
    server: Server, label: str, payload: bytes, status: int, fragment: str
) -> None:
    async with server.session.post(server.infer_url(), data=payload) as r:
        assert r.status == status, await r.text()
        assert r.content_type == "application/json"
        body = await r.json()
    assert set(body) == {"error"} and fragment in body["error"], body
    assert "Traceback" not in body["error"]


async def test_http_level_errors_are_json(server: Server, gpt2_build: TinyBuild) -> None:
    s = server.session
    async with s.post(server.infer_url("nobody"), json=_score_body(gpt2_build)) as r:
        assert r.status == 404 and "unknown model" in (await r.json())["error"]
    async with s.get(server.infer_url()) as r:
        assert r.status == 405 and "error" in await r.json()
    async with s.get(f"{server.url}/nothing/here") as r:
        assert r.status == 404 and "error" in await r.json()
    big = b'{"inputs": ["' + b"x" * (5 * 1024 * 1024) + b'"]}'
    async with s.post(server.infer_url(), data=big) as r:
        assert r.status == 413 and "limit" in (await r.json())["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: caught while reading
        for _ in range(6):
            yield b" " * (1024 * 1024)

    async with s.post(server.infer_url(), data=chunks()) as r:
        assert r.status == 413 and "limit" in (await r.json())["error"]
    async with s.get(f"{server.url}/v2/health/live") as r:  # still alive after all that
        assert r.status == 200


async def test_scorer_crash_is_a_500_without_details(
    scorer: EdgeScorer, gpt2_build: TinyBuild
) -> None:
    gated = Gated(scorer, fail=True)
    gated.release.set()
    async with _serve(gated, ServiceConfig(model_name=NAME)) as server:
        async with server.session.post(server.infer_url(), json=_score_body(gpt2_build)) as r:
            assert r.status == 500
            body = await r.json()
        assert "secret" not in body["error"] and "request id" in body["error"]


async def test_bearer_token_auth(scorer: EdgeScorer, gpt2_build: TinyBuild) -> None:
    async with _serve(scorer, ServiceConfig(model_name=NAME, token="s3cret")) as server:
        s = server.session
        async with s.get(f"{server.url}/v2/health/ready") as r:
            assert r.status == 200  # probes stay open
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            async with s.post(
                server.infer_url(), json=_score_body(gpt2_build), headers=headers
            ) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
                assert "token" in (await r.json())["error"]
        async with s.get(f"{server.url}/v2/models/{NAME}") as r:
            assert r.status == 401
        good = {"Authorization": "Bearer s3cret"}
        async with s.post(server.infer_url(), json=_score_body(gpt2_build), headers=good) as r:
            assert r.status == 200
        async with s.get(f"{server.url}/metrics", headers=good) as r:
            assert 'fedgrpo_edge_rejections_total{reason="unauthorized"} 4' in await r.text()


async def test_overload_is_refused_with_503_not_queued(
    scorer: EdgeScorer, gpt2_build: TinyBuild
) -> None:
    gated = Gated(scorer)
    config = ServiceConfig(model_name=NAME, max_concurrency=1, max_queue=0)
    async with _serve(gated, config) as server:
        first = asyncio.create_task(
            server.session.post(server.infer_url(), json=_score_body(gpt2_build))
        )
        assert await asyncio.to_thread(gated.started.wait, 5)
        async with server.session.post(server.infer_url(), json=_score_body(gpt2_build)) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "1"
            assert "busy" in (await r.json())["error"]
        async with server.session.get(f"{server.url}/v2/health/live") as r:
            assert r.status == 200  # the loop is free while the model works
        gated.release.set()
        response = await first
        assert response.status == 200
        response.release()
        async with server.session.post(server.infer_url(), json=_score_body(gpt2_build)) as r:
            assert r.status == 200  # the slot came back
        async with server.session.get(f"{server.url}/metrics") as r:
            text = await r.text()
        assert 'fedgrpo_edge_rejections_total{reason="overloaded"} 1' in text
        assert 'fedgrpo_edge_requests_total{route="/v2/models/{name}/infer",status="503"} 1' in text
        assert 'fedgrpo_edge_requests_total{route="/v2/models/{name}/infer",status="200"} 2' in text
        assert 'fedgrpo_edge_items_scored_total{task="score"} 8' in text
        assert (
            'fedgrpo_edge_request_duration_seconds_count{route="/v2/models/{name}/infer"} 3' in text
        )
        assert "fedgrpo_edge_in_flight 0" in text


async def test_queue_admits_up_to_its_size(scorer: EdgeScorer, gpt2_build: TinyBuild) -> None:
    gated = Gated(scorer)
    config = ServiceConfig(model_name=NAME, max_concurrency=1, max_queue=1)
    async with _serve(gated, config) as server:
        body, url, session = _score_body(gpt2_build), server.infer_url(), server.session

        def post() -> Any:
            return session.post(url, json=body)

        running = asyncio.create_task(post())
        assert await asyncio.to_thread(gated.started.wait, 5)
        queued = asyncio.create_task(post())
        for _ in range(100):  # until the second request is admitted (queued behind the first)
            async with session.get(f"{server.url}/metrics") as m:
                if "fedgrpo_edge_in_flight 2" in await m.text():
                    break
            await asyncio.sleep(0.02)
        async with post() as r:
            assert r.status == 503
        gated.release.set()
        statuses = [(await t).status for t in (running, queued)]
        assert statuses == [200, 200]


async def test_timeout_gives_504_and_keeps_the_slot_until_done(
    scorer: EdgeScorer, gpt2_build: TinyBuild
) -> None:
    gated = Gated(scorer)
    config = ServiceConfig(model_name=NAME, max_concurrency=1, max_queue=0, timeout=0.3)
    async with _serve(gated, config) as server:
        async with server.session.post(server.infer_url(), json=_score_body(gpt2_build)) as r:
            assert r.status == 504 and "0.3" in (await r.json())["error"]
        async with server.session.post(server.infer_url(), json=_score_body(gpt2_build)) as r:
            assert r.status == 503  # the timed-out job still occupies the only slot
        gated.release.set()
        for _ in range(50):
            async with server.session.post(server.infer_url(), json=_score_body(gpt2_build)) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        assert r.status == 200


async def test_graceful_shutdown_finishes_in_flight_requests(
    scorer: EdgeScorer, gpt2_build: TinyBuild
) -> None:
    gated = Gated(scorer)
    runner, port = await start_server(gated, ServiceConfig(model_name=NAME), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/v2/models/{NAME}/infer"
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(session.post(url, json=_score_body(gpt2_build)))
        assert await asyncio.to_thread(gated.started.wait, 5)
        stopping = asyncio.create_task(runner.cleanup())
        await asyncio.sleep(0.2)
        assert not stopping.done()  # waits for the request
        gated.release.set()
        response = await in_flight
        assert response.status == 200
        assert len((await response.json())["outputs"][0]["data"]) == 4
        await asyncio.wait_for(stopping, 10)
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/v2/health/live")


def _binary_request(
    questions: list[str], completions: list[str], binary_output: bool
) -> tuple[bytes, int]:
    def pack(values: list[str]) -> bytes:
        return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)

    raw_q, raw_c = pack(questions), pack(completions)
    header = {
        "id": "bin",
        "parameters": {"reward_mode": "likelihood"},
        "inputs": [
            {"name": "question", "datatype": "BYTES", "shape": [len(questions)], "parameters": {"binary_data_size": len(raw_q)}},
            {"name": "completion", "datatype": "BYTES", "shape": [len(completions)], "parameters": {"binary_data_size": len(raw_c)}},
        ],
        "outputs": [{"name": "reward", "parameters": {"binary_data": binary_output}}],
    }  # fmt: skip
    head = json.dumps(header).encode()
    return head + raw_q + raw_c, len(head)


async def test_binary_tensor_extension(
    server: Server, scorer: EdgeScorer, gpt2_build: TinyBuild
) -> None:
    items = gpt2_build.other_items[:3]
    qs, cs = [i.question for i in items], [i.completion + " ✓" for i in items]
    direct = scorer.score(qs, cs, "likelihood")
    body, head_len = _binary_request(qs, cs, binary_output=True)
    headers = {"Inference-Header-Content-Length": str(head_len)}
    async with server.session.post(server.infer_url(), data=body, headers=headers) as r:
        assert r.status == 200
        raw = await r.read()
        json_len = int(r.headers["Inference-Header-Content-Length"])
    meta = json.loads(raw[:json_len])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 12
    values = struct.unpack("<3f", raw[json_len:])
    np.testing.assert_allclose(values, direct, atol=1e-6)
    body, head_len = _binary_request(qs, cs, binary_output=False)
    async with server.session.post(
        server.infer_url(), data=body, headers={"Inference-Header-Content-Length": str(head_len)}
    ) as r:
        np.testing.assert_allclose((await r.json())["outputs"][0]["data"], direct, atol=1e-6)
    bad_cases = [
        (body[:-3], str(head_len), "remain in the body"),
        (body, str(len(body) + 5), "Inference-Header-Content-Length"),
        (body, "abc", "integer"),
        (body[:head_len] + struct.pack("<I", 2) + b"\xff\xfe" + body[head_len + 6 :], str(head_len), "UTF-8"),
    ]  # fmt: skip
    for payload, length, fragment in bad_cases:
        async with server.session.post(
            server.infer_url(), data=payload, headers={"Inference-Header-Content-Length": length}
        ) as r:
            assert r.status == 400, fragment
            assert fragment in (await r.json())["error"]


async def test_non_integer_answers_cross_the_wire(scorer: EdgeScorer) -> None:
    """MATH-style answers in the device's table, candidates spelling them differently."""
    table = AnswerTable(
        [("half of 1", "\\frac{1}{2}"), ("root of 45", "3\\sqrt{5}"), ("a quarter", "0.25")]
    )
    device = EdgeScorer(
        scorer.model, scorer.tokenizer, table, scorer.config, scorer.eos_token_id, NAME
    )
    questions = ("half of 1", "root of 45", "a quarter", "half of 1")
    completions = (" 1/2\nanswer: 0.5", " so\nanswer: 3\\sqrt5", " w\nanswer: $\\dfrac{1}{4}$",
                   " w\nanswer: 1/3")  # fmt: skip
    request = encode_request(ScoreRequest("frac-1", questions, completions, "answer"))
    async with (
        _serve(device, ServiceConfig(model_name=NAME)) as server,
        server.session.post(server.infer_url(), data=dumps(request)) as r,
    ):
        assert r.status == 200
        response = parse_response(await r.json(), 4, expected_id="frac-1")
    assert list(response.values) == [1.0, 1.0, 1.0, 0.0]
