"""Fault-injecting reverse proxy in front of a real edge service (emulate mode).

One :class:`FaultProxy` per client listens on a free loopback port and forwards to that
client's ``fedgrpo-edge serve`` process, applying the client's device profile exactly as the
simulator models it (the same :func:`fedgrpo.sim.devices.request_timing` and
:func:`~fedgrpo.sim.devices.transfer_s`), with every duration multiplied by ``time_scale``:

* **network**: uplink ``RTT/2 + request bytes / downlink bandwidth`` before the device sees the
  request, downlink ``RTT/2 + response bytes / uplink bandwidth`` after; RTT lognormal.
* **compute**: ``(overhead + decode / decode tok/s + k · tokens per candidate / prefill tok/s)
  × lognormal jitter`` at the profile's speed × model size class × ``dropout.slowdown``. The
  real edge process scores the request during this time; the answer is held back until the
  modelled time has passed (if the real model is slower, the real time wins).
* **one request at a time** per device (FIFO): queueing is real, as in the simulator. A
  request whose client gave up (the round cancelled it) while it waited is dropped unstarted.
* **crash** with the profile's (or ``dropout.fail``) per-request probability, at a uniform
  point of the compute: the connection is closed without an answer (the server sees a reset).
* **availability**: the profile's on/off Markov chain (or ``dropout.offline``), in profile
  seconds since the proxy started. A request arriving while the device is offline waits the
  connect timeout, then the connection is closed; a device that goes offline while scoring
  never answers (the server times out at the deadline).

Each proxy draws from its own seeded streams (``sim.rng.stream_generator(seed, client,
"request"/"availability")``), in the same order per request as the simulator.

Health, metadata and competence (enrolment) requests pass through with no faults: the
simulator also collects competence outside the timed rounds. If the edge process behind a
proxy is dead, the proxy answers 502 naming the client (a real device would refuse).

**Why in the server process, on its own loop thread (not one process per proxy)?** Proxies
only sleep and copy bytes; a second set of processes would double the process count on small
machines for nothing, make seeding and counters harder to read back, and add another thing to
clean up. A dedicated loop thread (not the gatherer's loop) keeps device timing independent of
the server's own event loop, and :meth:`ProxyHost.stop` closes everything in one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from fedgrpo.server.gathering.asynchronous import LoopThread
from fedgrpo.sim.config import AvailabilitySpec
from fedgrpo.sim.devices import DeviceProfile, device_timing, request_timing, transfer_s
from fedgrpo.sim.rng import ClientStream, stream_generator

__all__ = ["FaultModel", "FaultProxy", "ProxyHost"]

log = logging.getLogger(__name__)
HANG_S = 3600.0  # "never answers": until the client gives up (or the proxy stops)
_FORWARD_HEADERS = (
    "Authorization",
    "Content-Type",
    "X-Request-Id",
    "Inference-Header-Content-Length",
)


@dataclass(frozen=True)
class FaultModel:
    """What one emulated device does to requests. Times are profile seconds (unscaled)."""

    profile: DeviceProfile
    availability: AvailabilitySpec = field(default_factory=AvailabilitySpec)
    speed: float = 1.0  # size_factor(size class) × speed factor (1/slowdown)
    time_scale: float = 0.01
    decode_tokens: int = 0  # per request (agreement scoring decodes an answer)
    chars_per_token: float = 4.0
    connect_timeout_s: float = 5.0  # how long until the server notices an offline device
    faults_on_competence: bool = False
    bandwidth_mbps: float | None = None  # overrides both directions, as in the simulator

    @classmethod
    def from_client_spec(cls, spec: Any, time_scale: float, **kw: Any) -> FaultModel:
        """From a :class:`sim.config.ClientSpec` (profile, availability, size, speed)."""
        from fedgrpo.sim.devices import size_factor

        return cls(
            profile=spec.device,
            availability=spec.availability,
            speed=size_factor(spec.size_class) * spec.speed_factor,
            time_scale=time_scale,
            bandwidth_mbps=spec.bandwidth_mbps,
            **kw,
        )


def _items(body: bytes) -> tuple[int, int, bool]:
    """(items in the request, characters of text in it, is a competence request)."""
    try:
        doc = json.loads(body)
        inputs = doc["inputs"]
        names = {i.get("name") for i in inputs}
        k = max(len(i.get("data") or []) for i in inputs)
        chars = sum(len(str(x)) for i in inputs for x in (i.get("data") or []))
        return max(k, 1), chars, "reference_answer" in names
    except (ValueError, KeyError, TypeError, AttributeError):
        return 1, len(body), False


class FaultProxy:
    """Reverse proxy ``http://host:port`` → ``upstream`` with injected device behaviour."""

    def __init__(
        self, client_id: int, name: str, upstream: str, model: FaultModel, seed: int
    ) -> None:
        self.client_id = client_id
        self.name = name
        self.upstream = upstream.rstrip("/")
        self.model = model
        self.seed = seed
        self.counters: Counter[str] = Counter()
        self.port = 0
        self.host = "127.0.0.1"
        self._req = ClientStream(stream_generator(seed, client_id, "request"))
        self._avail = model.availability.build(model.profile, seed, client_id)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._device: asyncio.Lock | None = None
        self._t0 = 0.0
        # timing per prefill token (the request's text / chars per token)
        self._timing = device_timing(
            model.profile, model.speed, model.decode_tokens, bandwidth_mbps=model.bandwidth_mbps
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ----------------------------------------------------------------- time

    def _now(self) -> float:
        """Profile seconds since the proxy started."""
        return (asyncio.get_running_loop().time() - self._t0) / self.model.time_scale

    async def _sleep(self, profile_s: float) -> None:
        if profile_s > 0:
            await asyncio.sleep(profile_s * self.model.time_scale)

    # ----------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1") -> int:
        self._t0 = asyncio.get_running_loop().time()
        self.host = host
        self._device = asyncio.Lock()
        self._session = ClientSession(
            connector=TCPConnector(limit=64), timeout=ClientTimeout(total=None, sock_connect=5)
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=0.5,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        server: Any = site._server
        self.port = int(server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ----------------------------------------------------------------- requests

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {h: request.headers[h] for h in _FORWARD_HEADERS if h in request.headers}
        url = self.upstream + request.path_qs
        try:
            async with self._session.request(
                request.method, url, data=body or None, headers=headers
            ) as resp:
                raw = await resp.read()
                out_headers = {
                    h: resp.headers[h]
                    for h in ("Content-Type", "WWW-Authenticate", "Retry-After", "X-Request-Id",
                              "Inference-Header-Content-Length")
                    if h in resp.headers
                }  # fmt: skip
                return web.Response(body=raw, status=resp.status, headers=out_headers)
        except (ClientError, OSError) as exc:
            self.counters["upstream_down"] += 1
            msg = f"emulated device {self.name!r}: edge process unreachable ({type(exc).__name__})"
            return web.json_response({"error": msg}, status=502)

    def _abort(self, request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()

    async def _hang(self) -> web.Response:
        await asyncio.sleep(HANG_S)  # cancelled when the client disconnects
        return web.json_response({"error": "device never answered"}, status=504)

    def _draw(self, chars: int) -> tuple[float, float, float, float]:
        """(RTT/2, compute s, crash draw, crash point) of one request: fixed draws per
        request, in the simulator's order (2 normals, 2 uniforms)."""
        s = self._req
        z_rtt, z_speed = s.normal(), s.normal()
        crash_u, crash_at = s.uniform(), s.uniform()
        tokens = chars / self.model.chars_per_token
        half, compute = request_timing(self._timing, tokens, z_rtt, z_speed)
        return half, compute, crash_u, crash_at

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        is_infer = request.method == "POST" and request.path.endswith("/infer")
        _, chars, competence = _items(body) if is_infer else (0, 0, False)
        if not is_infer or (competence and not self.model.faults_on_competence):
            return await self._forward(request, body)
        self.counters["requests"] += 1
        half, compute, crash_u, crash_at = self._draw(chars)
        await self._sleep(transfer_s(half, len(body), self._timing.down_bps))
        until = self._avail.online_until(self._now())
        if until is None:
            self.counters["offline"] += 1
            # an offline device takes no connection: these bytes never went out
            self.counters["offline_bytes"] += len(body)
            await self._sleep(self.model.connect_timeout_s)
            self._abort(request)
            return await self._hang()
        assert self._device is not None
        async with self._device:  # one request at a time, FIFO
            response = await self._on_device(request, body, until, half, compute, crash_u, crash_at)
            if response is None:
                return await self._hang()
        await self._sleep(transfer_s(half, response.content_length or 0, self._timing.up_bps))
        self.counters["answered" if response.status == 200 else f"http_{response.status}"] += 1
        return response

    async def _on_device(
        self, request: web.Request, body: bytes, until: float, half: float, compute: float,
        crash_u: float, crash_at: float,
    ) -> web.Response | None:  # fmt: skip
        """The device's turn (holding its lock): the answer, held back until the modelled
        compute time has passed, or ``None`` when the device never answers (cancelled while
        queued, offline, crashed: the connection is then reset)."""
        if request.transport is None or request.transport.is_closing():
            self.counters["cancelled_queued"] += 1
            return None
        start = self._now()
        if start > until:  # went offline while the request waited: lost, never answered
            self.counters["offline"] += 1
            return None
        if crash_u < self.model.profile.crash_prob and start + compute * crash_at < until:
            await self._sleep(compute * crash_at)
            self.counters["crashed"] += 1
            await self._sleep(half)
            self._abort(request)
            return None
        if until < start + compute:  # goes offline mid-request: silent
            await self._sleep(until - start)
            self.counters["offline"] += 1
            return None
        loop = asyncio.get_running_loop()
        t = loop.time()
        response = await self._forward(request, body)
        left = compute * self.model.time_scale - (loop.time() - t)
        if left > 0:
            await asyncio.sleep(left)
        return response


class ProxyHost:
    """All fault proxies of an emulated fleet, served from one background loop thread."""

    def __init__(self) -> None:
        self._loop = LoopThread("fedgrpo-fault-proxies")
        self.proxies: list[FaultProxy] = []

    def add(self, proxy: FaultProxy, host: str = "127.0.0.1") -> FaultProxy:
        self._loop.run(proxy.start(host), timeout=30)
        self.proxies.append(proxy)
        return proxy

    def counters(self) -> dict[str, int]:
        """Fleet-wide cumulative counters (offline, crashed, answered, ...)."""
        total: Counter[str] = Counter()
        for p in self.proxies:
            total.update(p.counters)
        return dict(total)

    def stop(self) -> None:
        if not self._loop.alive:
            return

        async def stop_all() -> None:
            for p in self.proxies:
                with contextlib.suppress(Exception):
                    await p.stop()

        with contextlib.suppress(Exception):
            self._loop.run(stop_all(), timeout=15)
        self._loop.stop()
