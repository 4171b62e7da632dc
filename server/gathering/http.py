"""The asyncio driver of :mod:`fedgrpo.rounds`: send, retry, wait, cancel — in wall-clock time.

All decisions (what counts, when to retry, when to close, what to cancel) are taken by
:class:`fedgrpo.rounds.RoundState`; this module only does the waiting. Stragglers are cancelled
at the close (``Task.cancel``) and awaited for at most ``cancel_grace_s``, so a round never
lasts much longer than its deadline whatever the devices do — unless the round is
asynchronous (``late=``): then the stragglers (assignments still out at the close) keep
running on the loop for up to ``late.keep_s`` more seconds, their valid results go to
``late.on_result`` and their tasks to ``late.tasks``, and the round returns at its close.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fedgrpo.edge.protocol import CompetenceRequest, ScoreRequest
from fedgrpo.errors import ConfigError
from fedgrpo.rounds import (
    Assignment,
    AssignmentStatus,
    Disposition,
    RoundOutcome,
    RoundPlan,
    RoundPolicy,
    RoundState,
    validate_values,
)
from fedgrpo.server.gathering.transport import ClientEndpoint, Transport, TransportError

__all__ = ["BuildRequest", "LateWork", "gather_round"]

BuildRequest = Callable[[Assignment], ScoreRequest | CompetenceRequest]


@dataclass
class LateWork:
    """Async rounds: how long stragglers may outlive the close, where their results go."""

    keep_s: float
    on_result: Callable[[Assignment, Sequence[float]], None]
    tasks: list[tuple[Assignment, asyncio.Task[None]]] = field(default_factory=list)


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
    late: LateWork | None = None,
) -> RoundOutcome:
    """Run one round: send every assignment concurrently, retry failures within budget (same
    request id), close at the deadline or early, cancel stragglers, return the outcome.

    ``clock`` must tick in seconds alongside the event loop's own clock (the waiting uses
    ``asyncio`` timeouts); ``time.monotonic`` is the default and the right choice.
    """
    eps = _endpoint_map(endpoints)
    requests = _build_requests(plan, eps, build_request)
    state = RoundState(plan, policy, clock())
    driver = _RoundDriver(state, transport, eps, requests, clock, late)
    driver.start()
    try:
        await driver.wait_for_close()
    finally:
        await driver.shutdown(cancel_grace_s)
    return state.outcome()


def _build_requests(
    plan: RoundPlan, eps: Mapping[int, ClientEndpoint], build_request: BuildRequest
) -> dict[str, ScoreRequest | CompetenceRequest]:
    """assignment id → its request; every client needs an endpoint, every request the
    assignment's id (so that a retry is idempotent)."""
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
    return requests


class _RoundDriver:
    """One task per assignment, all reporting to ``state`` and waking the round's loop."""

    def __init__(
        self,
        state: RoundState,
        transport: Transport,
        eps: Mapping[int, ClientEndpoint],
        requests: Mapping[str, ScoreRequest | CompetenceRequest],
        clock: Callable[[], float],
        late: LateWork | None = None,
    ) -> None:
        self.late = late
        self.state = state
        self.transport = transport
        self.eps = eps
        self.requests = requests
        self.clock = clock
        self.wake = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        """A task for every assignment waiting to be sent."""
        for a in self.state.pending():
            self.tasks[a.assignment_id] = asyncio.create_task(self.run(a), name=a.assignment_id)

    async def run(self, a: Assignment) -> None:
        """Send ``a`` (again, while the state says retry) until it is resolved or the round
        closes."""
        state, clock, wake = self.state, self.clock, self.wake
        aid = a.assignment_id
        req, ep = self.requests[aid], self.eps[a.client_id]
        while True:
            now = clock()
            remaining = state.deadline - now
            if state.is_closed() or remaining <= 0:
                wake.set()
                return
            state.on_sent(a, now)
            keep = self.late.keep_s if self.late is not None else 0.0
            try:
                resp = await self.transport.score(ep, req, remaining + keep)
            except TransportError as exc:
                retry = state.on_failure(aid, f"{exc.kind}: {exc.message}", clock())
            except Exception as exc:  # a transport bug must not sink the round
                retry = state.on_failure(aid, f"error: {type(exc).__name__}: {exc}", clock())
            else:
                disp = state.on_result(aid, resp.values, clock())
                retry = disp is Disposition.RETRY
                if disp is Disposition.LATE and self.late is not None:
                    self._late_result(a, resp.values)
            wake.set()
            if not retry:
                return
            if state.policy.retry_backoff_s > 0:
                await asyncio.sleep(state.policy.retry_backoff_s)

    def _late_result(self, a: Assignment, values: Sequence[float]) -> None:
        """A straggler's result after the close: handed on if valid, else dropped."""
        assert self.late is not None
        if validate_values(values, len(a.candidates), self.state.policy.reward_range) is None:
            self.late.on_result(a, [float(v) for v in values])

    def _keeps(self, a: Assignment) -> bool:
        """Async rounds keep an assignment still out at the close running."""
        return self.late is not None and self.state.status(a) is AssignmentStatus.LATE

    def cancel(self, assignments: Sequence[Assignment]) -> None:
        """Cancel the tasks of ``assignments`` that are still running (not kept stragglers)."""
        for a in assignments:
            if self._keeps(a):
                continue
            task = self.tasks.get(a.assignment_id)
            if task is not None and not task.done():
                task.cancel()

    async def wait_for_close(self) -> None:
        """Wake on every report (or the deadline), cancel what is no longer needed, until the
        round closes."""
        state, clock = self.state, self.clock
        while True:
            self.cancel(state.to_cancel())
            if state.is_closed():
                break
            remaining = state.deadline - clock()
            if remaining <= 0:
                state.on_deadline(clock())
                continue
            self.wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), remaining)

    async def shutdown(self, cancel_grace_s: float) -> None:
        """Close the round if it is still open (cancelled from outside), cancel every task
        still running and wait for them at most ``cancel_grace_s``."""
        state = self.state
        if not state.is_closed():  # cancelled from outside
            state.close(self.clock(), "aborted")
        self.cancel(state.to_cancel())
        live = []
        for aid, t in self.tasks.items():
            if t.done():
                continue
            a = state.plan.by_id[aid]
            if self.late is not None and self._keeps(a):
                self.late.tasks.append((a, t))  # keeps running after the round returns
                continue
            t.cancel()
            live.append(t)
        if live:
            await asyncio.wait(live, timeout=cancel_grace_s)
