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
- Shutdown (:func:`stop_server`), bounded by ``shutdown_timeout`` in all: readiness flips to
  503 for ``drain_grace`` seconds, the listener closes, in-flight requests finish, then the
  pool is released without waiting for a stuck thread.
- Slow or silent clients are cut off (``keepalive_timeout``, ``header_timeout``,
  ``body_timeout``); errors of aiohttp's HTTP parser are JSON too (:mod:`.service_http`).

This module holds the handlers, the app and the server's start and stop; the middlewares
live in :mod:`fedgrpo.edge.service_middleware`, the connection level (JSON parser errors,
header deadline) in :mod:`fedgrpo.edge.service_http`; admission control and
the pool live in :mod:`fedgrpo.edge.service_state`, request decoding, validation and reply
encoding in :mod:`fedgrpo.edge.service_requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from fedgrpo.edge import __version__
from fedgrpo.edge.binary import HEADER_LENGTH, wants_binary_output
from fedgrpo.edge.device_rewards import admit
from fedgrpo.edge.privacy import BudgetSpent
from fedgrpo.edge.protocol import (
    COMPETENCE_INPUTS,
    COMPETENCE_OUTPUT,
    REWARD_MODES,
    REWARD_OUTPUT,
    SCORE_INPUTS,
    RewardResponse,
    encode_response,
    parse_request,
)
from fedgrpo.edge.service_config import RewardModel, ServiceConfig
from fedgrpo.edge.service_http import SERVER_NAME, EdgeRunner
from fedgrpo.edge.service_middleware import (
    Handler,
    auth,
    errors,
    expect,
    json_response,
    observe,
    state_of,
)
from fedgrpo.edge.service_requests import (
    binary_reply,
    check_outputs,
    check_unicode,
    decode_body,
    fp32,
    scoring_work,
)
from fedgrpo.edge.service_state import STATE, ServiceError, ServiceState

log = logging.getLogger("fedgrpo.edge.service")


# --------------------------------------------------------------------------- handlers


def _check_model(request: web.Request) -> ServiceState:
    state = state_of(request)
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


async def server_metadata(request: web.Request) -> web.Response:
    return json_response(
        {"name": "fedgrpo-edge", "version": __version__, "extensions": ["binary_tensor_data"]}
    )


async def live(request: web.Request) -> web.Response:
    return json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    if state_of(request).draining:
        return json_response({"ready": False}, 503)
    return json_response({"ready": True})


async def model_metadata(request: web.Request) -> web.Response:
    state = _check_model(request)
    config = state.config

    def tensor(name: str, datatype: str) -> dict[str, Any]:
        return {"name": name, "datatype": datatype, "shape": [-1]}

    inputs = [tensor(n, "BYTES") for n in dict.fromkeys((*SCORE_INPUTS, *COMPETENCE_INPUTS))]
    return json_response(
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
        return json_response({"name": state.config.model_name, "ready": False}, 503)
    return json_response({"name": state.config.model_name, "ready": True})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=state_of(request).metrics.render(),
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def _read_body(request: web.Request, config: ServiceConfig) -> bytes:
    """The whole body, within ``body_timeout`` (a slow sender gets 408, not a held slot)."""
    if request.content_length is not None and request.content_length > config.max_body_bytes:
        raise ServiceError(413, f"request body exceeds the {config.max_body_bytes}-byte limit")
    try:
        return await asyncio.wait_for(request.read(), config.body_timeout)
    except asyncio.TimeoutError:
        state_of(request).metrics.reject("body_timeout")
        raise ServiceError(
            408,
            f"request body not complete within {config.body_timeout:g} s (body_timeout); "
            "send the whole body at once",
            {"Connection": "close"},
        ) from None


async def infer(request: web.Request) -> web.Response:
    state = _check_model(request)
    config = state.config
    if state.draining:
        raise ServiceError(503, "device is shutting down", {"Retry-After": "5"})
    body = decode_body(await _read_body(request, config), request.headers.get(HEADER_LENGTH))
    parsed = parse_request(body, config.max_batch, config.max_string_chars)
    check_unicode(parsed)
    work, output_name, task = scoring_work(state.scorer, parsed)
    check_outputs(body, output_name)
    if task == "score":
        try:  # a device whose privacy budget is spent refuses before it scores
            admit(state.scorer, len(parsed))
        except BudgetSpent as exc:
            state.metrics.reject("privacy_budget")
            raise ServiceError(403, str(exc)) from None
    values = await state.run(work)
    if len(values) != len(parsed) or not all(math.isfinite(v) for v in values):
        log.error(
            "scorer returned %d values (expected %d) or non-finite ones", len(values), len(parsed)
        )
        raise ServiceError(500, "the scorer produced an invalid result")
    state.metrics.scored(task, len(values))
    values = [fp32(v) for v in values]  # what the FP32 tensor holds, JSON or binary
    response = RewardResponse(
        parsed.request_id, config.model_name, tuple(values), output_name, config.model_version
    )
    payload = encode_response(response)
    if not wants_binary_output(body, output_name):
        return json_response(payload)
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
        client_max_size=config.max_body_bytes, middlewares=[observe, errors, auth]
    )
    app[STATE] = ServiceState(scorer, config)
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/v2", server_metadata),
        ("GET", "/v2/health/live", live),
        ("GET", "/v2/health/ready", ready),
        ("GET", "/metrics", metrics),
    ]
    for base in (model, versioned):
        routes += [
            ("GET", base, model_metadata),
            ("GET", f"{base}/ready", model_ready),
            ("POST", f"{base}/infer", infer),
        ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler, expect_handler=expect)

    async def start_draining(app: web.Application) -> None:
        app[STATE].draining = True

    async def stop_pool(app: web.Application) -> None:
        # In-flight requests have finished or been given up on by now; a thread still
        # running is not waited for (that is what left shutdown unbounded).
        app[STATE].executor.shutdown(wait=False, cancel_futures=True)

    app.on_response_prepare.append(_server_header)
    app.on_shutdown.append(start_draining)
    app.on_cleanup.append(stop_pool)
    return app


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME  # not aiohttp's "Python/3.x aiohttp/3.x"


async def start_server(
    scorer: RewardModel, config: ServiceConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (``await runner.cleanup()`` or
    :func:`stop_server` to stop) and the port."""
    app = create_app(scorer, config)
    runner = EdgeRunner(
        app,
        header_timeout=config.header_timeout,
        metrics=app[STATE].metrics,
        access_log=None,
        # aiohttp's wait for in-flight handlers; stop_server bounds the rest of the shutdown.
        shutdown_timeout=0.8 * (config.shutdown_timeout - config.drain_grace),
        handle_signals=False,
        keepalive_timeout=config.keepalive_timeout,
        lingering_time=min(1.0, config.body_timeout),
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)


async def stop_server(runner: web.AppRunner, config: ServiceConfig) -> None:
    """Graceful shutdown, bounded by ``shutdown_timeout`` in all: readiness answers 503 at
    once and for ``drain_grace`` seconds with the listener still open, then the listener
    closes and in-flight requests get the rest of the budget; a scorer thread still busy
    after that is abandoned (logged), not waited for."""
    state = runner.app[STATE]
    state.draining = True
    await asyncio.sleep(config.drain_grace)
    try:
        await asyncio.wait_for(runner.cleanup(), config.shutdown_timeout - config.drain_grace)
    except asyncio.TimeoutError:
        log.warning(
            "shutdown did not finish within shutdown_timeout=%gs; abandoning %d in-flight "
            "request(s)",
            config.shutdown_timeout,
            state.pending,
        )
        state.executor.shutdown(wait=False, cancel_futures=True)


async def serve_forever(
    scorer: RewardModel,
    config: ServiceConfig,
    host: str,
    port: int,
    on_started: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully (:func:`stop_server`)."""
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
        await stop_server(runner, config)
