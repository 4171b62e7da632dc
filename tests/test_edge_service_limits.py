"""Issue 17: what an attacker on the LAN found — bad input that gave 500s, text/plain parser
errors, unbounded slow clients, disconnects logged as tracebacks, log injection, unbounded
shutdown, partial 413 counts, version disclosure and float64 digits in FP32 outputs."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import struct
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp
import pytest

from fedgrpo.edge.protocol import dumps
from fedgrpo.edge.service import start_server
from fedgrpo.edge.service_config import ServiceConfig
from fedgrpo.edge.service_requests import fp32

NAME = "m"
INFER = f"/v2/models/{NAME}/infer"


@dataclass
class Recording:
    """A stand-in scorer that counts its calls (to prove a request never reached it)."""

    name: str = NAME
    calls: int = 0
    value: float = 1 / 3
    hold: float = 0.0

    def score(
        self,
        questions: Sequence[str],
        completions: Sequence[str],
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        partial_credit: float = 0.0,
    ) -> list[float]:
        self.calls += 1
        time.sleep(self.hold)
        return [self.value] * len(questions)

    def competence(self, questions: Sequence[str], reference_answers: Sequence[str]) -> list[float]:
        self.calls += 1
        return [1.0] * len(questions)


def _body(question: str = "1+1", completion: str = " answer: 2", **extra: object) -> dict:
    def tensor(name: str, value: str) -> dict[str, object]:
        return {"name": name, "datatype": "BYTES", "shape": [1], "data": [value]}

    return {"inputs": [tensor("question", question), tensor("completion", completion)], **extra}


@dataclass
class Live:
    port: int
    runner: object
    scorer: Recording
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def metrics(self) -> str:
        async with self.session.get(self.url + "/metrics") as r:
            return await r.text()


@contextlib.asynccontextmanager
async def _live(
    config: ServiceConfig | None = None, scorer: Recording | None = None
) -> AsyncIterator[Live]:
    scorer = scorer or Recording()
    runner, port = await start_server(scorer, config or ServiceConfig(model_name=NAME))
    try:
        async with aiohttp.ClientSession() as session:
            yield Live(port, runner, scorer, session)
    finally:
        await runner.cleanup()


async def _raw(port: int, data: bytes, wait: float = 2.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes (or ``wait`` passes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    chunks: list[bytes] = []
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        await asyncio.wait_for(_drain(reader, chunks), wait)
    writer.close()
    return b"".join(chunks)


async def _drain(reader: asyncio.StreamReader, into: list[bytes] | None = None) -> None:
    while chunk := await reader.read(65536):
        if into is not None:
            into.append(chunk)


def _split(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


# --------------------------------------------------------------------------- bad input, 4xx


def _post(body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )


GOOD = dumps(_body())
BAD_INPUT = [
    ("5000-digit integer", GOOD[:-1] + b',"x":' + b"9" * 5000 + b"}", (), 400, "number"),
    ("format_weight 1e400", dumps(_body(parameters={"format_weight": 10**400})), (), 422, "format_weight"),
    ("lone surrogate id", b'{"id":"\\ud800",' + GOOD[1:], (), 400, "surrogate"),
    ("corrupt gzip", b"\x1f\x8b\x08\x00garbage-garbage", ("Content-Encoding: gzip",), 400, "gzip"),
    ("corrupt deflate", b"not deflate at all", ("Content-Encoding: deflate",), 400, "deflate"),
    ("corrupt br", b"not brotli at all", ("Content-Encoding: br",), 400, "br"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "body", "headers", "status", "fragment"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT]
)
async def test_bad_input_is_a_json_4xx_before_any_scoring(
    label: str,
    body: bytes,
    headers: tuple[str, ...],
    status: int,
    fragment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with _live() as live:
        got, head, payload = _split(
            await _raw(live.port, _post(body, *headers, "Connection: close"))
        )
        assert got == status, payload
        assert head["content-type"].startswith("application/json")
        error = json.loads(payload)["error"]
        assert fragment in error and "internal" not in error
        assert live.scorer.calls == 0
        assert 'status="500"' not in await live.metrics()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_well_encoded_bodies_still_work() -> None:
    async with _live() as live:
        for encoding, data in (("gzip", gzip.compress(GOOD)), ("deflate", zlib.compress(GOOD))):
            reply = await _raw(
                live.port, _post(data, f"Content-Encoding: {encoding}", "Connection: close")
            )
            assert _split(reply)[0] == 200, reply
        assert live.scorer.calls == 2


# --------------------------------------------------------------------------- parser errors, JSON


PARSER_ERRORS = [
    ("invalid method", b"G@T /v2 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("duplicate Content-Length", f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}".encode(), 400),
    ("huge header", b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 400),
    ("Expect: bogus", _post(b"{}", "Expect: bogus"), 417),
    ("unsupported encoding", _post(b"abcd", "Content-Encoding: zstd-nope, zstd"), 400),
    ("not HTTP at all", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "raw", "status"), PARSER_ERRORS, ids=[p[0] for p in PARSER_ERRORS]
)
async def test_http_parser_errors_are_json(label: str, raw: bytes, status: int) -> None:
    async with _live() as live:
        got, head, payload = _split(await _raw(live.port, raw))
        assert got == status, payload
        assert head["content-type"].startswith("application/json"), head
        assert head["server"] == "fedgrpo-edge"
        body = json.loads(payload)
        assert set(body) == {"error"} and "\n" not in body["error"]
        async with live.session.get(live.url + "/v2/health/live") as r:
            assert r.status == 200


async def test_expect_100_continue_still_works() -> None:
    async with _live() as live:
        response = await live.session.post(live.url + INFER, data=GOOD, expect100=True)
        assert response.status == 200 and live.scorer.calls == 1
        response.release()


async def test_server_header_discloses_no_versions() -> None:
    async with _live() as live:
        for path in ("/v2", "/v2/health/live", "/nothing", INFER):
            async with live.session.get(live.url + path) as r:
                assert r.headers["Server"] == "fedgrpo-edge", path


# --------------------------------------------------------------------------- slow clients


async def _closed_within(port: int, sends: list[bytes], interval: float, limit: float) -> float:
    """Seconds until the server closes a connection that sends ``sends`` one per
    ``interval`` (the server must close it before ``limit``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for part in sends:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(interval)

    feeder = asyncio.create_task(trickle())
    try:
        await asyncio.wait_for(_drain(reader), limit)
    finally:
        feeder.cancel()
        writer.close()
    return time.perf_counter() - start


FAST_CUTOFF = ServiceConfig(
    model_name=NAME, keepalive_timeout=0.5, header_timeout=0.5, body_timeout=0.5
)


async def test_silent_connections_are_closed() -> None:
    async with _live(FAST_CUTOFF) as live:
        assert await _closed_within(live.port, [], 0.1, 3.0) < 1.5


async def test_slow_header_connections_are_closed() -> None:
    """One header line every 0.1 s, never finished: cut at ``header_timeout`` even though
    ``keepalive_timeout`` alone would allow much longer."""
    config = ServiceConfig(model_name=NAME, keepalive_timeout=30, header_timeout=0.5)
    async with _live(config) as live:
        slow = [b"GET /v2 HTTP/1.1\r\nHost: x\r\n"] + [b"X-Slow: 1\r\n"] * 100
        assert await _closed_within(live.port, slow, 0.1, 3.0) < 1.5
        async with live.session.get(live.url + "/v2/health/live") as r:
            assert r.status == 200  # a normal request on a fresh connection still works
        # the second request on a kept-alive connection gets its own deadline
        first = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        assert await _closed_within(live.port, [first, *slow], 0.1, 3.0) < 1.8
        assert 'fedgrpo_edge_rejections_total{reason="header_timeout"} 2' in await live.metrics()


async def test_slow_body_gets_408_and_idle_keepalive_is_closed() -> None:
    async with _live(FAST_CUTOFF) as live:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        writer.write(f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{{".encode())
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(65536), 3)
        writer.close()
        status, _, payload = _split(reply)
        assert status == 408 and "body_timeout" in json.loads(payload)["error"]
        assert live.scorer.calls == 0
        keepalive = [b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"]  # then idle
        assert await _closed_within(live.port, keepalive, 0.1, 3.0) < 1.5


async def test_client_disconnect_mid_body_is_no_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with _live() as live:
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", live.port)
            writer.write(
                f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{{".encode()
            )
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
        await asyncio.sleep(0.3)
        text = await live.metrics()
    assert 'status="500"' not in text and 'status="499"} 3' in text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


# --------------------------------------------------------------------------- log injection


@pytest.mark.parametrize("token", [None, "s3cret"])
async def test_access_log_escapes_the_path(
    caplog: pytest.LogCaptureFixture, token: str | None
) -> None:
    caplog.set_level(logging.INFO, logger="fedgrpo.edge.access")
    config = ServiceConfig(model_name=NAME, token=token)
    async with _live(config) as live:
        forged = "/v2/models/x%0A127.0.0.1%20GET%20/v2%20200%200.1ms%0D%1B[31m"
        async with live.session.get(live.url + forged, headers={"Accept": "*/*"}) as r:
            assert r.status == (401 if token else 404)
    lines = [r.getMessage() for r in caplog.records if r.name == "fedgrpo.edge.access"]
    assert lines and all("\n" not in m and "\r" not in m and "\x1b" not in m for m in lines)
    assert any("x\\n127.0.0.1 GET /v2 200 0.1ms\\r\\x1b[31m" in m for m in lines), lines


# --------------------------------------------------------------------------- counts and encoding


async def test_every_413_counts_as_too_large() -> None:
    config = ServiceConfig(model_name=NAME, max_batch=2, max_string_chars=10)
    async with _live(config) as live:
        bodies = [
            dumps(_body(completion="x" * 11)),  # string too long
            dumps({"inputs": [{"name": "question", "datatype": "BYTES", "shape": [3], "data": ["1"] * 3}]}),
            b" " * (config.max_body_bytes + 1),  # body over the limit
        ]  # fmt: skip
        for body in bodies:
            async with live.session.post(live.url + INFER, data=body) as r:
                assert r.status == 413
        assert 'fedgrpo_edge_rejections_total{reason="too_large"} 3' in await live.metrics()


def test_fp32_rounding() -> None:
    assert fp32(0.1) == 0.1 and fp32(1 / 3) == 0.33333334 and fp32(1.0) == 1.0
    for value in (1 / 3, 0.1, 2 / 3, 1e-7, 0.987654321):
        single = struct.unpack("<f", struct.pack("<f", value))[0]
        assert struct.pack("<f", fp32(value)) == struct.pack("<f", single)
        assert len(repr(fp32(value)).replace("0.", "").lstrip("0")) <= 9


async def test_json_fp32_outputs_carry_float32_digits() -> None:
    async with _live() as live:
        async with live.session.post(live.url + INFER, data=GOOD) as r:
            raw = await r.read()
        assert b"0.33333334" in raw and b"0.3333333333" not in raw
        binary = _body(outputs=[{"name": "reward", "parameters": {"binary_data": True}}])
        async with live.session.post(live.url + INFER, data=dumps(binary)) as r:
            data = await r.read()
            head = int(r.headers["Inference-Header-Content-Length"])
        assert data[head:] == struct.pack("<f", 0.33333334)
