"""Property-based fuzz of the infer route (issue 17), against a real tiny exported model.

Hypothesis builds requests from near-valid to garbage: mutated OIP bodies (wrong types,
huge and negative numbers, lone surrogates, unknown names), raw bytes, compressed bodies
with and without a matching ``Content-Encoding``, bogus binary-extension headers. Whatever
arrives, the device must answer below 500, with a JSON body (or the binary reply it was
asked for), and keep serving. The budget is bounded (``MAX_EXAMPLES``, no deadline) so it
runs in ``make test`` in a few seconds.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import logging
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from edge_reference import TinyBuild
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig
from fedgrpo.edge.service import start_server
from fedgrpo.edge.service_config import ServiceConfig

pytest_plugins = ["edge_fixtures"]
NAME = "fuzz"
INFER = f"/v2/models/{NAME}/infer"
MAX_EXAMPLES = 400


@dataclass
class Background:
    port: int
    loop: asyncio.AbstractEventLoop

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def device(gpt2_build: TinyBuild) -> Iterator[Background]:
    """The service on a loopback port, its event loop in a thread (a sync client drives it)."""
    scorer = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(variant="fp32", threads=1))
    config = ServiceConfig(model_name=NAME, max_batch=6, max_string_chars=80, max_queue=8)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner, port = asyncio.run_coroutine_threadsafe(start_server(scorer, config), loop).result(60)
    try:
        yield Background(port, loop)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


# --------------------------------------------------------------------------- strategies

ODD_STRINGS = st.sampled_from(
    ["\ud800", "a\udfff", "\x00", "\u2028", "answer: 4", " 2+2=4\nanswer: 4", ""]
)
TEXT = st.text(max_size=30) | ODD_STRINGS
BIG_NUMBERS = st.sampled_from([10**400, -(10**30), 2**63, 1e308, -0.0, 0.5, 1, 0, True])
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT | BIG_NUMBERS
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=8,
)


def _maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, JSON)


@st.composite
def tensors(draw: st.DrawFn) -> Any:
    data = draw(_maybe(st.lists(TEXT, min_size=0, max_size=7)))
    n = len(data) if isinstance(data, list) else 1
    tensor: dict[str, Any] = {
        "name": draw(_maybe(st.sampled_from(["question", "completion", "reference_answer"]))),
        "datatype": draw(_maybe(st.just("BYTES"))),
        "shape": draw(_maybe(st.sampled_from([[n], [n, 1], [n + 1], [-n], []]))),
        "data": data,
    }
    if draw(st.booleans()) and draw(st.booleans()):
        tensor["parameters"] = draw(_maybe(st.fixed_dictionaries({"binary_data_size": JSON})))
    return draw(st.sampled_from([tensor, tensor, tensor, draw(JSON)]))


@st.composite
def bodies(draw: st.DrawFn) -> Any:
    parameters = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "task": _maybe(st.sampled_from(["score", "competence"])),
                "reward_mode": _maybe(st.sampled_from(["auto", "answer", "agreement", "likelihood", "format"])),
                "format_weight": _maybe(st.floats(0, 1)) | BIG_NUMBERS,
                "binary_data_output": JSON,
            },
        )
    )  # fmt: skip
    body: dict[str, Any] = {
        "id": draw(_maybe(TEXT)),
        "parameters": draw(_maybe(st.just(parameters))),
        "inputs": draw(_maybe(st.lists(tensors(), max_size=3))),
    }
    if draw(st.booleans()):
        body["outputs"] = draw(_maybe(st.just([{"name": draw(_maybe(st.just("reward")))}])))
    return body


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> Any:
    """A valid score or competence request, then at most one field replaced by anything."""
    n = draw(st.integers(1, 6))
    task = draw(st.sampled_from(["score", "competence"]))
    second = "completion" if task == "score" else "reference_answer"

    def tensor(name: str) -> dict[str, Any]:
        data = draw(st.lists(TEXT, min_size=n, max_size=n))
        return {"name": name, "datatype": "BYTES", "shape": [n], "data": data}

    body: dict[str, Any] = {
        "id": draw(TEXT),
        "parameters": {
            "task": task,
            "reward_mode": draw(st.sampled_from(["auto", "answer", "agreement", "likelihood", "format"])),
            "format_weight": draw(st.floats(0, 1)),
        },
        "inputs": [tensor("question"), tensor(second)],
    }  # fmt: skip
    where = draw(
        st.sampled_from(["none", "none", "id", "parameters", "inputs", "tensor", "weight"])
    )
    if where in ("id", "parameters", "inputs"):
        body[where] = draw(JSON)
    elif where == "tensor":
        body["inputs"][draw(st.integers(0, 1))][
            draw(st.sampled_from(["name", "datatype", "shape", "data"]))
        ] = draw(JSON)
    elif where == "weight":
        body["parameters"]["format_weight"] = draw(BIG_NUMBERS | JSON)
    return body  # fmt: skip


ENCODINGS: dict[str, Any] = {"gzip": gzip.compress, "deflate": zlib.compress}
try:  # aiohttp decodes br only with Brotli installed; without it "br" is a JSON 400 anyway
    import brotli

    ENCODINGS["br"] = brotli.compress
except ImportError:  # pragma: no cover - depends on the environment
    pass


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["valid", "valid", "json", "json", "raw", "digits"]))
    if kind in ("valid", "json"):
        body = draw(near_valid_bodies() if kind == "valid" else bodies())
        raw = json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    elif kind == "digits":
        raw = (
            b'{"id": "d", "parameters": {"format_weight": '
            + b"7" * draw(st.integers(1, 6000))
            + b"}}"
        )
    else:
        raw = draw(st.binary(max_size=200))
    headers: dict[str, str] = {"Content-Type": "application/json"}
    encoding = draw(st.sampled_from([None, None, None, None, "gzip", "deflate", "br"]))
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        if encoding in ENCODINGS and (kind == "valid" or draw(st.booleans())):  # real, or a lie
            raw = ENCODINGS[encoding](raw)
    if kind != "valid" and draw(st.integers(0, 4)) == 0:
        length = draw(st.integers(-5, len(raw) + 5) | HEADER_TEXT)
        headers["Inference-Header-Content-Length"] = str(length)
    return raw, headers  # fmt: skip


# --------------------------------------------------------------------------- the property


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=requests())
def test_infer_never_fails_the_server(
    device: Background, request: tuple[bytes, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    raw, headers = request
    status, reply_headers, payload = device.request("POST", INFER, raw, headers)
    event(f"status {status}")
    assert status < 500, (status, payload[:300])
    content_type = reply_headers.get("Content-Type", "")
    if content_type.startswith("application/octet-stream"):
        assert status == 200 and "Inference-Header-Content-Length" in reply_headers
        payload = payload[: int(reply_headers["Inference-Header-Content-Length"])]
    else:
        assert content_type.startswith("application/json"), (status, content_type, payload[:200])
    body = json.loads(payload)
    assert isinstance(body, dict)
    if status >= 400:
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    else:
        assert body["outputs"][0]["datatype"] == "FP32"
    live = device.request("GET", "/v2/health/live", b"", {})
    assert live[0] == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
