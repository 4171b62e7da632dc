"""The device's HTTP service: Open Inference Protocol v2 over aiohttp, reward-only.

Routes (``{name}`` is the served model; ``/versions/{version}`` variants exist too)::

    GET  /v2                         server metadata
    GET  /v2/health/live             200 while the process runs            (no auth)
    GET  /v2/health/ready            200 when accepting work, 503 draining  (no auth)
    GET  /v2/models/{name}           model metadata (inputs, outputs, datatypes, shapes)
    GET  /v2/models/{name}/ready     200 / 404 / 503
    POST /v2/models/{name}/infer     score or competence request -> FP32 output
    GET  /metrics                    Prometheus text

Design choices, and why:

- Scoring runs in a thread pool, off the event loop, so health checks and refusals stay
  instant while the model works (onnxruntime releases the GIL).
- Admission is bounded: ``max_concurrency`` running + ``max_queue`` waiting; beyond that a
  request gets 503 + Retry-After immediately. A request that times out (504) keeps its slot
  until its thread really finishes, so a stuck model cannot be oversubscribed.
- Every error is ``{"error": "..."}`` JSON with a meaningful status; no traceback ever
  leaves the device (it goes to the log with the request id).
- Optional bearer token, compared in constant time; health endpoints stay open for probes.
- Shutdown: readiness flips to 503, the listener closes, in-flight requests finish (up to
  ``shutdown_timeout``), then the pool is drained.

This module is the aiohttp side (middlewares, handlers, app, server); admission control and
the pool live in :mod:`fedgrpo.edge.service_state`, request decoding, validation and reply
encoding in :mod:`fedgrpo.edge.service_requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hmac
import logging
import math
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fedgrpo.edge import __version__
from fedgrpo.edge.binary import HEADER_LENGTH, wants_binary_output
from fedgrpo.edge.protocol import (
    COMPETENCE_INPUTS,
    COMPETENCE_OUTPUT,
    REWARD_MODES,
    REWARD_OUTPUT,
    SCORE_INPUTS,
    ProtocolError,
    RewardResponse,
    dumps,
    encode_response,
    parse_request,
)
from fedgrpo.edge.service_config import RewardModel, ServiceConfig
from fedgrpo.edge.service_requests import (
    binary_reply,
    check_outputs,
    check_unicode,
    decode_body,
    scoring_work,
)
from fedgrpo.edge.service_state import STATE, ServiceError, ServiceState

log = logging.getLogger("fedgrpo.edge.service")
access_log = logging.getLogger("fedgrpo.edge.access")
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Each request runs in its own task, so a context variable is per-request state.
_CURRENT_REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="?")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- helpers


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"error": message}, status, headers)


def _state(request: web.Request) -> ServiceState:
    return request.app[STATE]


def _check_model(request: web.Request) -> ServiceState:
    state = _state(request)
    name = request.match_info.get("name")
    version = request.match_info.get("version")
    if name != state.config.model_name or (
        version is not None and version != state.config.model_version
    ):
        label = name if version is None else f"{name}/{version}"
        raise ServiceError(
            404, f"unknown model {label!r}; this device serves {state.config.model_name!r}"
        )
    return state


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex[:16]


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


# --------------------------------------------------------------------------- middlewares


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: request id, latency histogram, request counter, access log line."""
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
        _state(request).metrics.observe(_route_label(request), status, elapsed)
        access_log.info(
            "%s %s %s %d %.1fms rid=%s",
            request.remote,
            request.method,
            request.path,
            status,
            elapsed * 1000,
            request_id,
        )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into OIP-style JSON; log (never send) unexpected tracebacks."""
    try:
        return await handler(request)
    except ServiceError as exc:
        return _error(exc.status, exc.message, exc.headers)
    except ProtocolError as exc:
        return _error(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge:
        limit = _state(request).config.max_body_bytes
        _state(request).metrics.reject("too_large")
        return _error(413, f"request body exceeds the {limit}-byte limit")
    except web.HTTPException as exc:
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        return _error(exc.status, exc.reason, headers)
    except Exception:
        request_id = _CURRENT_REQUEST_ID.get()
        log.exception("unhandled error in %s %s (rid=%s)", request.method, request.path, request_id)
        return _error(500, f"internal error; see the device log for request id {request_id}")


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer-token check (constant-time) on everything but the health probes."""
    token = _state(request).config.token
    if token is None or request.path in OPEN_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8")
    ):
        _state(request).metrics.reject("unauthorized")
        raise ServiceError(
            401,
            "missing or wrong bearer token",
            {"WWW-Authenticate": 'Bearer realm="fedgrpo-edge"'},
        )
    return await handler(request)


# --------------------------------------------------------------------------- handlers


async def server_metadata(request: web.Request) -> web.Response:
    return _json(
        {"name": "fedgrpo-edge", "version": __version__, "extensions": ["binary_tensor_data"]}
    )


async def live(request: web.Request) -> web.Response:
    return _json({"live": True})


async def ready(request: web.Request) -> web.Response:
    if _state(request).draining:
        return _json({"ready": False}, 503)
    return _json({"ready": True})


async def model_metadata(request: web.Request) -> web.Response:
    state = _check_model(request)
    config = state.config

    def tensor(name: str, datatype: str) -> dict[str, Any]:
        return {"name": name, "datatype": datatype, "shape": [-1]}

    inputs = [tensor(n, "BYTES") for n in dict.fromkeys((*SCORE_INPUTS, *COMPETENCE_INPUTS))]
    return _json(
        {
            "name": config.model_name,
            "versions": [config.model_version],
            "platform": "onnxruntime",
            "inputs": inputs,
            "outputs": [tensor(REWARD_OUTPUT, "FP32"), tensor(COMPETENCE_OUTPUT, "FP32")],
            "parameters": {
                "tasks": ["score", "competence"],
                "reward_modes": list(REWARD_MODES),
                "max_batch": config.max_batch,
                **dict(config.parameters),
            },
        }
    )


async def model_ready(request: web.Request) -> web.Response:
    state = _check_model(request)
    if state.draining:
        return _json({"name": state.config.model_name, "ready": False}, 503)
    return _json({"name": state.config.model_name, "ready": True})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=_state(request).metrics.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def infer(request: web.Request) -> web.Response:
    state = _check_model(request)
    config = state.config
    if state.draining:
        raise ServiceError(503, "device is shutting down", {"Retry-After": "5"})
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        state.metrics.reject("too_large")
        raise ServiceError(413, f"request body exceeds the {config.max_body_bytes}-byte limit")
    body = decode_body(await request.read(), request.headers.get(HEADER_LENGTH))
    parsed = parse_request(body, config.max_batch, config.max_string_chars)
    check_unicode(parsed)
    work, output_name, task = scoring_work(state.scorer, parsed)
    check_outputs(body, output_name)
    values = await state.run(work)
    if len(values) != len(parsed) or not all(math.isfinite(v) for v in values):
        log.error(
            "scorer returned %d values (expected %d) or non-finite ones", len(values), len(parsed)
        )
        raise ServiceError(500, "the scorer produced an invalid result")
    state.metrics.scored(task, len(values))
    response = RewardResponse(
        parsed.request_id, config.model_name, tuple(values), output_name, config.model_version
    )
    payload = encode_response(response)
    if not wants_binary_output(body, output_name):
        return _json(payload)
    data, header_length = binary_reply(payload, values)
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_length)},
    )


# --------------------------------------------------------------------------- app


def create_app(scorer: RewardModel, config: ServiceConfig) -> web.Application:
    """The aiohttp application (run it with ``AppRunner`` or aiohttp's test server)."""
    app = web.Application(
        client_max_size=config.max_body_bytes, middlewares=[_observe, _errors, _auth]
    )
    app[STATE] = ServiceState(scorer, config)
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for base in (model, versioned):
        app.router.add_get(base, model_metadata)
        app.router.add_get(f"{base}/ready", model_ready)
        app.router.add_post(f"{base}/infer", infer)
    app.router.add_get("/metrics", metrics)

    async def start_draining(app: web.Application) -> None:
        app[STATE].draining = True

    async def stop_pool(app: web.Application) -> None:
        await asyncio.to_thread(app[STATE].executor.shutdown, True)

    app.on_shutdown.append(start_draining)
    app.on_cleanup.append(stop_pool)
    return app


async def start_server(
    scorer: RewardModel, config: ServiceConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (``await runner.cleanup()`` to stop) and the port."""
    runner = web.AppRunner(
        create_app(scorer, config),
        access_log=None,
        shutdown_timeout=config.shutdown_timeout,
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


async def serve_forever(
    scorer: RewardModel,
    config: ServiceConfig,
    host: str,
    port: int,
    on_started: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    runner, bound = await start_server(scorer, config, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows has no signal handlers
            loop.add_signal_handler(sig, stop.set)
    if on_started is not None:
        on_started(bound)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing in-flight requests (up to %gs)", config.shutdown_timeout)
        await runner.cleanup()
