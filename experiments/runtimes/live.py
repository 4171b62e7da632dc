"""Live mode: the real async server against real devices listed in the scenario.

Each client's URL comes from its group (``url`` / ``urls``, client k = k-th URL in group
order); its bearer token from ``token`` or the environment variable named by ``token_env``.
Before round 1 every device is checked, concurrently:

1. ``GET /v2/health/ready`` (no auth) — unreachable or not ready → error naming client + URL;
2. the served model name — ``GET /v2/models`` if the device lists its models (OIP repository
   style), else the name ``fedgrpo-edge serve`` uses by default: the basename of the model the
   client was exported from (e.g. ``expert-0-<hash>`` for ``zoo:expert``; pass ``--name`` on
   the device to choose another; a device that serves exactly one model and says which in its
   404 is followed);
3. ``GET /v2/models/{name}/ready`` with the token — 401/403 → the token is wrong or missing,
   naming the environment variable to set.

All problems are reported together in one :class:`LiveDeviceError`. Then rounds run through
:class:`~fedgrpo.server.gathering.asynchronous.AsyncGatherer` in real time (``time_scale`` 1).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedgrpo.errors import ConfigError
from fedgrpo.experiments.context import ClientRewardTransport
from fedgrpo.scenarios.mapping import client_rewards, reserve_per_question, round_policy
from fedgrpo.scenarios.schema import ClientEntry, Scenario
from fedgrpo.server.gathering.asynchronous import AsyncGatherer
from fedgrpo.server.gathering.transport import ClientEndpoint, HttpTransport

__all__ = ["LiveDevice", "LiveDeviceError", "check_devices", "live_devices", "make_live_gatherer"]

log = logging.getLogger(__name__)
_SERVES_RE = re.compile(r"this device serves '([^']+)'")
CHECK_TIMEOUT_S = 10.0


class LiveDeviceError(ConfigError):
    """One or more live devices are unreachable, not ready or refuse our token."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"{len(problems)} live device problem(s) before round 1:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class LiveDevice:
    client: ClientEntry
    url: str
    token: str | None
    token_source: str  # for error messages: "token_env FEDGRPO_TOKEN (unset)", "token", "none"
    expected_model: str | None


def _token(client: ClientEntry) -> tuple[str | None, str]:
    g = client.group
    if g.token is not None:
        return g.token, f"clients group {g.name!r} token"
    if g.token_env is not None:
        value = os.environ.get(g.token_env) or None
        state = "set" if value else "unset or empty"
        return value, f"${g.token_env} ({state})"
    return None, "no token configured (set token_env in the scenario)"


def live_devices(s: Scenario, model_names: dict[int, str] | None = None) -> list[LiveDevice]:
    out = []
    for c in s.client_list():
        if c.url is None:
            raise ConfigError(
                f"client {c.id!r} (group {c.group.name!r}) has no URL; mode live needs url/urls"
            )
        token, source = _token(c)
        expected = (model_names or {}).get(c.index)
        out.append(LiveDevice(c, c.url.rstrip("/"), token, source, expected))
    return out


def expected_model_names(ctx: Any) -> dict[int, str]:
    """The default served name of each client's model: basename of its source model."""
    from fedgrpo.experiments.context import resolve_model

    names: dict[int, str] = {}
    for c in ctx.clients:
        try:
            source = resolve_model(ctx, c.model)
        except ConfigError:
            continue
        names[c.index] = Path(source.rstrip("/")).name or source
    return names


class _Unusable(Exception):
    """A device check failed; the message says why and what to do."""


def _unauthorised(d: LiveDevice, who: str, status: int) -> _Unusable:
    if d.token is None:
        return _Unusable(
            f"{who}: HTTP {status} unauthorised — the device requires a bearer token but none "
            f"was sent ({d.token_source}); set it"
        )
    return _Unusable(
        f"{who}: HTTP {status} unauthorised — the device rejected the token from "
        f"{d.token_source}; the token is wrong"
    )


async def _listed_model(
    session: Any, d: LiveDevice, who: str, headers: dict[str, str], tmo: Any
) -> str | None:
    """The expected model name, or the only model ``GET /v2/models`` lists, or None."""
    async with session.get(f"{d.url}/v2/health/ready", timeout=tmo) as r:
        if r.status != 200:
            raise _Unusable(f"{who}: not ready (GET /v2/health/ready -> HTTP {r.status})")
    name = d.expected_model
    async with session.get(f"{d.url}/v2/models", headers=headers, timeout=tmo) as r:
        if r.status in (401, 403):
            raise _unauthorised(d, who, r.status)
        if r.status == 200:
            body = await r.json(content_type=None)
            models = body.get("models") if isinstance(body, dict) else body
            listed = [m.get("name") if isinstance(m, dict) else m for m in models or []]
            listed = [m for m in listed if isinstance(m, str)]
            if name not in listed and len(listed) == 1:
                name = listed[0]
    return name


async def _ready_model(
    session: Any, d: LiveDevice, who: str, name: str | None, headers: dict[str, str], tmo: Any
) -> str:
    """The served model's name once ``/v2/models/{name}/ready`` says 200 (following the edge's
    404 hint once when the name was a guess or differs)."""
    probing = name is None
    name = name or "default"  # unknown: the edge's 404 says which model it serves
    for _ in range(2):
        async with session.get(
            f"{d.url}/v2/models/{name}/ready", headers=headers, timeout=tmo
        ) as r:
            if r.status in (401, 403):
                raise _unauthorised(d, who, r.status)
            if r.status == 200:
                return name
            text = await r.text()
        m = _SERVES_RE.search(text)
        if r.status == 404 and m and m.group(1) != name:
            log.info("%s serves %r (expected %r); using it", who, m.group(1), name)
            name, probing = m.group(1), False
            continue
        if probing:
            raise _Unusable(
                f"{who}: cannot tell which model it serves (no GET /v2/models list, "
                f"HTTP {r.status} for a probe); serve it under the model's default name"
            )
        raise _Unusable(f"{who}: model {name!r} not ready (HTTP {r.status}: {text[:200]})")
    raise _Unusable(f"{who}: model {name!r} not found")


async def _check_one(
    session: Any, d: LiveDevice, timeout_s: float
) -> tuple[str | None, str | None]:
    """(model name, None) if usable, else (None, problem)."""
    import aiohttp

    who = f"client {d.client.id!r} at {d.url}"
    tmo = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"Authorization": f"Bearer {d.token}"} if d.token else {}
    try:
        name = await _listed_model(session, d, who, headers, tmo)
        return await _ready_model(session, d, who, name, headers, tmo), None
    except _Unusable as exc:
        return None, str(exc)
    except asyncio.TimeoutError:
        return None, f"{who}: unreachable (no answer within {timeout_s:g} s)"
    except aiohttp.ClientError as exc:
        return None, f"{who}: unreachable ({type(exc).__name__}: {exc})"
    except OSError as exc:
        return None, f"{who}: unreachable ({exc})"


async def _check_all(
    devices: list[LiveDevice], timeout_s: float
) -> list[tuple[str | None, str | None]]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.gather(*(_check_one(session, d, timeout_s) for d in devices)))


def check_devices(devices: list[LiveDevice], timeout_s: float = CHECK_TIMEOUT_S) -> list[str]:
    """Served model name per device; raises :class:`LiveDeviceError` listing every problem."""
    results = asyncio.run(_check_all(devices, timeout_s))
    problems = [p for _, p in results if p is not None]
    if problems:
        raise LiveDeviceError(problems)
    return [n for n, _ in results if n is not None]


def make_live_gatherer(ctx: Any) -> tuple[Any, Any]:
    """(gatherer, closer) for ``mode: live``; each device's requests carry its own group's
    reward settings, and over-selection is the scenario's count (see mapping)."""
    s: Scenario = ctx.scenario
    devices = live_devices(s, expected_model_names(ctx))
    names = check_devices(devices)
    endpoints = [
        ClientEndpoint(d.client.index, d.url, name, d.token) for d, name in zip(devices, names)
    ]
    log.info("live: %d devices ready", len(endpoints))
    gatherer = AsyncGatherer(
        endpoints,
        round_policy(s),
        ClientRewardTransport(HttpTransport(), client_rewards(s)),
        dispatch_mode=s.selection.dispatch,
        labels=[c.group.profile for c in ctx.clients],
        reserve_per_question=reserve_per_question(s),
        max_staleness=s.round_policy.max_staleness if s.round_policy.async_ else None,
    )
    return gatherer, gatherer.close
