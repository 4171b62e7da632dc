"""The device service's aiohttp middlewares and the helpers every handler shares: request
ids, the access log line (escaped), JSON errors for every failure (client disconnects
recorded as 499, never as 500), the bearer-token check and the ``Expect`` handler."""

from __future__ import annotations

import contextvars
import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientConnectionResetError, HttpVersion11, web
from aiohttp.http_exceptions import HttpProcessingError

from fedgrpo.edge.protocol import ProtocolError, dumps
from fedgrpo.edge.service_http import client_text, escape_for_log
from fedgrpo.edge.service_state import STATE, ServiceError, ServiceState

__all__ = [
    "CLIENT_CLOSED",
    "REQUEST_ID_HEADER",
    "Handler",
    "auth",
    "error_response",
    "errors",
    "expect",
    "json_response",
    "observe",
    "state_of",
]

log = logging.getLogger("fedgrpo.edge.service")
access_log = logging.getLogger("fedgrpo.edge.access")
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Each request runs in its own task, so a context variable is per-request state.
_CURRENT_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="?")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLIENT_CLOSED = 499


# --------------------------------------------------------------------------- helpers


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"error": message}, status, headers)


def state_of(request: web.Request) -> ServiceState:
    return request.app[STATE]


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex[:16]


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


# --------------------------------------------------------------------------- middlewares


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request id, latency histogram, request counter, access log line (the path
    escaped: a ``%0A`` in the URL cannot forge a log line). A client that hung up is
    recorded as 499 (nginx's "client closed request"), never as a server error."""
    request_id = _request_id(request)
    _CURRENT_REQUEST_ID.set(request_id)
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        elapsed = time.perf_counter() - start
        state_of(request).metrics.observe(_route_label(request), status, elapsed)
        access_log.info(
            "%s %s %s %d %.1fms rid=%s",
            request.remote,
            escape_for_log(request.method, 32),
            escape_for_log(request.path),
            status,
            elapsed * 1000,
            request_id,
        )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into OIP-style JSON; log (never send) unexpected tracebacks."""
    try:
        response = await _json_errors(request, handler)
    except (ConnectionResetError, ClientConnectionResetError):
        log.info(
            "client %s went away during %s %s (rid=%s)",
            request.remote,
            escape_for_log(request.method, 32),
            escape_for_log(request.path),
            _CURRENT_REQUEST_ID.get(),
        )
        # Never delivered (the socket is gone); 499 keeps it out of the 5xx counts.
        return error_response(CLIENT_CLOSED, "client closed the connection before the reply")
    if response.status == 413:
        state_of(request).metrics.reject("too_large")
    return response


async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except ProtocolError as exc:
        return error_response(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge:
        limit = state_of(request).config.max_body_bytes
        return error_response(413, f"request body exceeds the {limit}-byte limit")
    except web.HTTPException as exc:
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        return error_response(exc.status, exc.reason, headers)
    except (ConnectionResetError, ClientConnectionResetError):
        raise
    except (HttpProcessingError, web.RequestPayloadError) as exc:
        # e.g. a gzip/deflate/br body that does not decode: the rest of the body is garbage,
        # so end it here (aiohttp would read on after the reply and log a traceback) and
        # close the connection after the reply.
        request.content.feed_eof()
        encoding = request.headers.get("Content-Encoding", "identity")
        response = error_response(
            400,
            f"request body could not be read ({client_text(str(exc))}); check that it is "
            f"really encoded as Content-Encoding {client_text(encoding, 40)!r}",
        )
        response.force_close()
        return response
    except Exception:
        request_id = _CURRENT_REQUEST_ID.get()
        log.exception(
            "unhandled error in %s %s (rid=%s)",
            escape_for_log(request.method, 32),
            escape_for_log(request.path),
            request_id,
        )
        return error_response(
            500, f"internal error; see the device log for request id {request_id}"
        )


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token check (constant-time) on everything but the health probes."""
    token = state_of(request).config.token
    if token is None or request.path in OPEN_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    ):
        state_of(request).metrics.reject("unauthorized")
        raise ServiceError(
            401,
            "missing or wrong bearer token",
            {"WWW-Authenticate": 'Bearer realm="fedgrpo-edge"'},
        )
    return await handler(request)


async def expect(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` as aiohttp does; any other expectation is a JSON 417 (aiohttp
    answers it in text/plain before any middleware runs)."""
    value = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if value.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the real response has not started yet
        return None
    return error_response(
        417, f"unsupported Expect: {client_text(value, 80)!r}; send 100-continue or nothing"
    )
