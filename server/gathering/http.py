"""The asyncio driver of :mod:`fedgrpo.rounds`: send, retry, wait, cancel — in wall-clock time.

All decisions (what counts, when to retry, when to close, what to cancel) are taken by
:class:`fedgrpo.rounds.RoundState`; this module only does the waiting. Stragglers are cancelled
at the close (``Task.cancel``) and awaited for at most ``cancel_grace_s``, so a round never
lasts much longer than its deadline whatever the devices do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence

from fedgrpo.edge.protocol import CompetenceRequest, ScoreRequest
from fedgrpo.errors import ConfigError
from fedgrpo.rounds import (
    Assignment,
    Disposition,
    RoundOutcome,
    RoundPlan,
    RoundPolicy,
    RoundState,
)
from fedgrpo.server.gathering.transport import ClientEndpoint, Transport, TransportError

__all__ = ["BuildRequest", "gather_round"]

BuildRequest = Callable[[Assignment], ScoreRequest | CompetenceRequest]


def _endpoint_map(
    endpoints: Mapping[int, ClientEndpoint] | Sequence[ClientEndpoint],
) -> dict[int, ClientEndpoint]:
    if isinstance(endpoints, Mapping):
        return dict(endpoints)
    return {ep.client_id: ep for ep in endpoints}


async def gather_round(
    plan: RoundPlan,
    policy: RoundPolicy,
    transport: Transport,
    endpoints: Mapping[int, ClientEndpoint] | Sequence[ClientEndpoint],
    build_request: BuildRequest,
    clock: Callable[[], float] = time.monotonic,
    cancel_grace_s: float = 0.05,
) -> RoundOutcome:
    """Run one round: send every assignment concurrently, retry failures within budget (same
    request id), close at the deadline or early, cancel stragglers, return the outcome.

    ``clock`` must tick in seconds alongside the event loop's own clock (the waiting uses
    ``asyncio`` timeouts); ``time.monotonic`` is the default and the right choice.
    """
    eps = _endpoint_map(endpoints)
    requests: dict[str, ScoreRequest | CompetenceRequest] = {}
    for a in plan.assignments:
        if a.client_id not in eps:
            raise ConfigError(
                f"plan asks client {a.client_id} but no endpoint is given for it; "
                f"known clients: {sorted(eps)[:20]}"
            )
        req = build_request(a)
        if req.request_id != a.assignment_id:
            raise ConfigError(
                f"build_request gave request id {req.request_id!r} for assignment "
                f"{a.assignment_id!r}; use the assignment id (retries must be idempotent)"
            )
        requests[a.assignment_id] = req

    state = RoundState(plan, policy, clock())
    wake = asyncio.Event()
    tasks: dict[str, asyncio.Task[None]] = {}

    async def backoff() -> None:
        if policy.retry_backoff_s > 0:
            await asyncio.sleep(policy.retry_backoff_s)

    async def run(a: Assignment) -> None:
        aid = a.assignment_id
        req, ep = requests[aid], eps[a.client_id]
        while True:
            now = clock()
            remaining = state.deadline - now
            if state.is_closed() or remaining <= 0:
                wake.set()
                return
            state.on_sent(a, now)
            try:
                resp = await transport.score(ep, req, remaining)
            except TransportError as exc:
                retry = state.on_failure(aid, f"{exc.kind}: {exc.message}", clock())
            except Exception as exc:  # a transport bug must not sink the round
                retry = state.on_failure(aid, f"error: {type(exc).__name__}: {exc}", clock())
            else:
                retry = state.on_result(aid, resp.values, clock()) is Disposition.RETRY
            wake.set()
            if not retry:
                return
            await backoff()

    def cancel(assignments: Sequence[Assignment]) -> None:
        for a in assignments:
            task = tasks.get(a.assignment_id)
            if task is not None and not task.done():
                task.cancel()

    for a in state.pending():
        tasks[a.assignment_id] = asyncio.create_task(run(a), name=a.assignment_id)

    try:
        while True:
            cancel(state.to_cancel())
            if state.is_closed():
                break
            remaining = state.deadline - clock()
            if remaining <= 0:
                state.on_deadline(clock())
                continue
            wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)
    finally:
        if not state.is_closed():  # cancelled from outside
            state.close(clock(), "aborted")
        cancel(state.to_cancel())
        live = [t for t in tasks.values() if not t.done()]
        for t in live:
            t.cancel()
        if live:
            await asyncio.wait(live, timeout=cancel_grace_s)
    return state.outcome()
