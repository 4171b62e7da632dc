"""How the server reaches an expert: one async ``score`` call per request.

* :class:`HttpTransport` — the OIP v2 wire protocol over one shared aiohttp session
  (keep-alive, connection limits, bearer token, per-request timeout, byte accounting).
* :class:`InProcessTransport` — client id → a sync or async callable; for tests and for the
  simulator's model-in-the-loop.

Every failure is a :class:`TransportError` subclass carrying the client id, so the gatherer can
record *why* an assignment failed (status, timeout, refused, protocol violation).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fedgrpo.edge.protocol import (
    CompetenceRequest,
    ProtocolError,
    RewardResponse,
    ScoreRequest,
    dumps,
    encode_request,
    encode_response,
    parse_response,
)
from fedgrpo.errors import ConfigError, FedGRPOError

__all__ = [
    "ClientEndpoint",
    "ConnectError",
    "HttpStatusError",
    "HttpTransport",
    "InProcessTransport",
    "ResponseProtocolError",
    "TrafficCounter",
    "Transport",
    "TransportError",
    "TransportTimeout",
]

Request = ScoreRequest | CompetenceRequest


# --------------------------------------------------------------------------- errors


class TransportError(FedGRPOError):
    """A request to a client did not produce a trustworthy answer. ``kind`` is a short tag
    (``http``, ``timeout``, ``connect``, ``protocol``, ``client``) for run logs."""

    kind = "transport"

    def __init__(self, client_id: int, message: str) -> None:
        super().__init__(f"client {client_id}: {message}")
        self.client_id = client_id
        self.message = message


class HttpStatusError(TransportError):
    """The device answered with an HTTP error status (its JSON ``error`` message included)."""

    kind = "http"

    def __init__(self, client_id: int, status: int, message: str) -> None:
        super().__init__(client_id, f"HTTP {status}: {message}")
        self.status = status
        self.error = message


class TransportTimeout(TransportError):
    kind = "timeout"


class ConnectError(TransportError):
    """Connection refused, reset or closed before a full response arrived."""

    kind = "connect"


class ResponseProtocolError(TransportError):
    """The response was not valid protocol (bad JSON, wrong length, NaN/inf, wrong id)."""

    kind = "protocol"


class ClientCallError(TransportError):
    """An in-process scorer raised."""

    kind = "client"


# --------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class ClientEndpoint:
    """Where client ``client_id`` serves: ``POST {base_url}/v2/models/{model_name}/infer``."""

    client_id: int
    base_url: str
    model_name: str
    token: str | None = None

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"client {self.client_id}: base_url {self.base_url!r} must start with http:// or https://"
            )
        if not self.model_name or "/" in self.model_name:
            raise ConfigError(
                f"client {self.client_id}: model_name {self.model_name!r} must be a non-empty name without '/'"
            )

    @property
    def infer_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/v2/models/{self.model_name}/infer"


class TrafficCounter:
    """Bytes sent to / received from each client (request and response bodies as sent)."""

    def __init__(self) -> None:
        self.sent: dict[int, int] = defaultdict(int)
        self.received: dict[int, int] = defaultdict(int)

    def add(self, client_id: int, sent: int, received: int) -> None:
        self.sent[client_id] += sent
        self.received[client_id] += received

    def totals(self) -> tuple[int, int]:
        return sum(self.sent.values()), sum(self.received.values())

    def snapshot(self) -> dict[int, tuple[int, int]]:
        keys = set(self.sent) | set(self.received)
        return {k: (self.sent.get(k, 0), self.received.get(k, 0)) for k in sorted(keys)}


TrafficCallback = Callable[[int, int, int], None]  # (client_id, bytes_sent, bytes_received)


@runtime_checkable
class Transport(Protocol):
    async def score(
        self, client: ClientEndpoint, request: Request, timeout_s: float
    ) -> RewardResponse: ...

    async def aclose(self) -> None: ...


def _check_timeout(timeout_s: float) -> None:
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0 and not math.isnan(timeout_s)):
        raise ConfigError(f"timeout_s={timeout_s!r}; give a number of seconds > 0")


# --------------------------------------------------------------------------- in-process

ScoreCallable = Callable[[Request], RewardResponse | Awaitable[RewardResponse]]


class InProcessTransport:
    """Clients are callables ``request -> RewardResponse`` (sync or async). The response is
    round-tripped through the real JSON encoding, so byte counts and validation match HTTP."""

    def __init__(
        self,
        clients: Mapping[int, ScoreCallable],
        on_traffic: TrafficCallback | None = None,
    ) -> None:
        self.clients = dict(clients)
        self.traffic = TrafficCounter()
        self._on_traffic = on_traffic

    async def score(
        self, client: ClientEndpoint, request: Request, timeout_s: float
    ) -> RewardResponse:
        _check_timeout(timeout_s)
        fn = self.clients.get(client.client_id)
        if fn is None:
            raise ConnectError(
                client.client_id, "no in-process scorer registered (connection refused)"
            )
        sent = len(dumps(encode_request(request)))
        try:
            if inspect.iscoroutinefunction(fn):
                result: Any = await asyncio.wait_for(fn(request), timeout_s)
            else:
                result = fn(request)
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, timeout_s)
        except asyncio.TimeoutError as exc:
            self._count(client.client_id, sent, 0)
            raise TransportTimeout(client.client_id, f"no answer within {timeout_s:.3f} s") from exc
        except TransportError:
            self._count(client.client_id, sent, 0)
            raise
        except (ProtocolError, ValueError, RuntimeError, OSError, KeyError, TypeError) as exc:
            self._count(client.client_id, sent, 0)
            raise ClientCallError(client.client_id, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(result, RewardResponse):
            self._count(client.client_id, sent, 0)
            raise ResponseProtocolError(
                client.client_id, f"scorer returned {type(result).__name__}, not RewardResponse"
            )
        body = encode_response(result)
        self._count(client.client_id, sent, len(dumps(body)))
        try:
            return parse_response(body, len(request), request.request_id)
        except ProtocolError as exc:
            raise ResponseProtocolError(client.client_id, exc.message) from exc

    def _count(self, client_id: int, sent: int, received: int) -> None:
        self.traffic.add(client_id, sent, received)
        if self._on_traffic is not None:
            self._on_traffic(client_id, sent, received)

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- HTTP


class HttpTransport:
    """OIP v2 over HTTP with one shared keep-alive session (created lazily in the running loop).

    ``limit`` / ``limit_per_host`` bound concurrent connections; each request gets its own total
    timeout. Bytes are counted on the request body sent and the response body received.
    """

    def __init__(
        self,
        limit: int = 256,
        limit_per_host: int = 8,
        connect_timeout_s: float = 5.0,
        on_traffic: TrafficCallback | None = None,
        user_agent: str = "fedgrpo-server/0.1",
    ) -> None:
        if limit < 1 or limit_per_host < 0:
            raise ConfigError(
                f"limit={limit}, limit_per_host={limit_per_host}; need limit >= 1, limit_per_host >= 0"
            )
        _check_timeout(connect_timeout_s)
        self.limit, self.limit_per_host = limit, limit_per_host
        self.connect_timeout_s = connect_timeout_s
        self.user_agent = user_agent
        self.traffic = TrafficCounter()
        self._on_traffic = on_traffic
        self._session: Any = None

    def _get_session(self) -> Any:
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limit, limit_per_host=self.limit_per_host, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.user_agent}
            )
        return self._session

    async def _post(
        self, cid: int, url: str, payload: bytes, headers: dict[str, str], timeout: Any
    ) -> tuple[int, bytes]:
        """POST and count the bytes that actually moved; transport failures become
        :class:`TransportError` subclasses."""
        import aiohttp

        received = 0
        # (ConnectionTimeoutError: a connect timeout, aiohttp >= 3.10)
        not_connected = (
            aiohttp.ClientConnectorError,
            getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ClientConnectorError),
        )
        try:
            async with self._get_session().post(
                url, data=payload, headers=headers, timeout=timeout
            ) as resp:
                raw = await resp.read()
                received = len(raw)
                status = resp.status
        except not_connected as exc:
            # no connection was made: nothing went out (bytes count only what was sent)
            self._count(cid, 0, 0)
            raise ConnectError(cid, f"{type(exc).__name__}: {exc}") from exc
        except asyncio.TimeoutError as exc:
            self._count(cid, len(payload), received)
            raise TransportTimeout(cid, f"no answer within {timeout.total:.3f} s") from exc
        except aiohttp.ClientError as exc:  # incl. ClientConnectionError after connecting
            self._count(cid, len(payload), received)
            raise ConnectError(cid, f"{type(exc).__name__}: {exc}") from exc
        self._count(cid, len(payload), received)
        return status, raw

    async def score(
        self, client: ClientEndpoint, request: Request, timeout_s: float
    ) -> RewardResponse:
        import aiohttp

        _check_timeout(timeout_s)
        cid = client.client_id
        payload = dumps(encode_request(request))
        headers = {"Content-Type": "application/json"}
        if client.token:
            headers["Authorization"] = f"Bearer {client.token}"
        timeout = aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(self.connect_timeout_s, timeout_s)
        )
        status, raw = await self._post(cid, client.infer_url, payload, headers, timeout)
        body = _json_or_none(raw)
        if status != 200:
            message = ""
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                message = body["error"]
            else:
                message = raw[:200].decode("utf-8", errors="replace")
            raise HttpStatusError(cid, status, message)
        if body is None:
            raise ResponseProtocolError(cid, "response body is not JSON")
        try:
            return parse_response(body, len(request), request.request_id)
        except ProtocolError as exc:
            raise ResponseProtocolError(cid, exc.message) from exc

    def _count(self, client_id: int, sent: int, received: int) -> None:
        self.traffic.add(client_id, sent, received)
        if self._on_traffic is not None:
            self._on_traffic(client_id, sent, received)

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> HttpTransport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _json_or_none(raw: bytes) -> Any:
    import json

    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
