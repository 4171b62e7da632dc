"""The connection level of the device service: what aiohttp does before any handler runs.

aiohttp answers errors of its HTTP parser (an invalid method, a duplicate Content-Length,
oversized headers, ``Expect: bogus``, an unsupported Content-Encoding...) itself, as
text/plain, without passing through the application or its middlewares. This module swaps in
a request handler whose ``handle_error`` answers ``{"error": ...}`` JSON like every other
error of the service, logs one escaped line instead of a traceback, and counts the error in
``/metrics``.

It also bounds how long a connection may hold the device without sending a request:

- ``keepalive_timeout``: a connection that sends nothing (after connecting, or after its
  last response) is closed after this long;
- ``header_timeout``: once the first bytes of a request arrive, its request line and headers
  must be complete within this long, or the connection is closed (slow-header clients).

The body's read time is bounded by the ``infer`` handler (``body_timeout``, answered 408).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from fedgrpo.edge.metrics import Metrics
from fedgrpo.edge.protocol import dumps

__all__ = ["SERVER_NAME", "EdgeRunner", "client_text", "escape_for_log", "json_error_response"]

SERVER_NAME = "fedgrpo-edge"
log = logging.getLogger("fedgrpo.edge.service")
access_log = logging.getLogger("fedgrpo.edge.access")


def escape_for_log(text: str, limit: int = 2048) -> str:
    """``text`` with control characters, backslashes and non-printables escaped (``\\n``,
    ``\\x1b``, ``\\u2028``), cut to ``limit`` characters: one log record stays one line and
    a client cannot forge another."""
    if text.isprintable() and "\\" not in text:
        escaped = text
    else:
        escaped = "".join(
            c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")
            for c in text
        )
    return escaped if len(escaped) <= limit else escaped[:limit] + "...(truncated)"


def client_text(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit``: for error replies."""
    flat = " ".join(text.replace("\\n", " ").split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def json_error_response(status: int, message: str) -> web.Response:
    """``{"error": message}`` with ``status``; the connection is closed after it."""
    response = web.Response(
        body=dumps({"error": message}),
        status=status,
        content_type="application/json",
        headers={"Server": SERVER_NAME},
    )
    response.force_close()
    return response


class _EdgeRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with JSON parser errors and a header deadline."""

    def __init__(
        self, manager: web.Server, *, header_timeout: float, metrics: Metrics, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._edge_header_timeout = header_timeout
        self._edge_metrics = metrics
        self._edge_header_handle: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        idle = waiter is not None and not waiter.done()
        if idle and self._edge_header_handle is None and self._edge_header_timeout > 0:
            # The first bytes of a new request: its headers must be complete in time.
            self._edge_header_handle = self._loop.call_later(
                self._edge_header_timeout, self._header_deadline, waiter
            )
        super().data_received(data)
        handle = self._edge_header_handle
        if handle is not None and (waiter is None or waiter.done()):
            handle.cancel()  # the request's headers are complete: next request, next deadline
            self._edge_header_handle = None

    def _header_deadline(self, waiter: asyncio.Future[None] | None) -> None:
        self._edge_header_handle = None
        if waiter is not None and self._waiter is waiter and not waiter.done():
            log.info(
                "closing a connection from %s: request headers not complete within %gs",
                self.peername,
                self._edge_header_timeout,
            )
            self._edge_metrics.reject("header_timeout")
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._edge_header_handle is not None:
            self._edge_header_handle.cancel()
            self._edge_header_handle = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response is under way: nothing more to send
            raise ConnectionError("response already started; cannot send an error after it")
        if status >= 500:
            log.error("error handling a request from %s: %r", request.remote, exc)
            text = "internal error; see the device log"
        else:
            reason = escape_for_log(message or (str(exc) if exc is not None else "bad request"))
            access_log.info(
                "%s - - %d rejected by the HTTP parser: %s", request.remote, status, reason
            )
            text = f"malformed HTTP request: {reason}; send a valid HTTP/1.1 request"
            if status == 413:
                self._edge_metrics.reject("too_large")
        self._edge_metrics.observe("unparsed", status, 0.0)
        return json_error_response(status, text)


class _EdgeServer(web.Server):
    """A ``web.Server`` whose connections use :class:`_EdgeRequestHandler`."""

    def __init__(self, *args: Any, header_timeout: float, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._edge_header_timeout = header_timeout
        self._edge_metrics = metrics

    def __call__(self) -> RequestHandler:
        return _EdgeRequestHandler(
            self,
            loop=self._loop,
            header_timeout=self._edge_header_timeout,
            metrics=self._edge_metrics,
            **self._kwargs,
        )


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`_EdgeServer` (same options otherwise)."""

    def __init__(
        self, app: web.Application, *, header_timeout: float, metrics: Metrics, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._edge_header_timeout = header_timeout
        self._edge_metrics = metrics

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return _EdgeServer(
            base.request_handler,
            request_factory=base.request_factory,
            loop=asyncio.get_running_loop(),
            header_timeout=self._edge_header_timeout,
            metrics=self._edge_metrics,
            **self._kwargs,
        )
