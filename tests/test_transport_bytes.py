"""Bytes count only what was sent: a request that never found a connection moved nothing."""

from __future__ import annotations

import socket

import pytest
from aiohttp import web

from fedgrpo.edge.protocol import ScoreRequest
from fedgrpo.server.gathering.transport import (
    ClientEndpoint,
    ConnectError,
    HttpStatusError,
    HttpTransport,
)

REQ = ScoreRequest("r0-q0-c0", ("2+2?",), ("answer: 4",))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connection_refused_counts_no_bytes() -> None:
    transport = HttpTransport(connect_timeout_s=2.0)
    ep = ClientEndpoint(0, f"http://127.0.0.1:{_closed_port()}", "expert")
    try:
        with pytest.raises(ConnectError):
            await transport.score(ep, REQ, 5.0)
    finally:
        await transport.aclose()
    assert transport.traffic.totals() == (0, 0)


async def test_an_error_answer_counts_the_request_and_the_response() -> None:
    async def infer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": "model not ready"}, status=503)

    app = web.Application()
    app.router.add_post("/v2/models/expert/infer", infer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    transport = HttpTransport()
    try:
        with pytest.raises(HttpStatusError, match="model not ready"):
            await transport.score(ClientEndpoint(0, f"http://127.0.0.1:{port}", "expert"), REQ, 5.0)
    finally:
        await transport.aclose()
        await runner.cleanup()
    sent, received = transport.traffic.totals()
    assert sent > 50 and received > 10
