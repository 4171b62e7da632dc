"""The real asyncio gatherer behind the trainer's synchronous ``gather`` call (emulate + live).

The trainer is synchronous; :func:`fedgrpo.server.gathering.http.gather_round` is a coroutine and the
:class:`~fedgrpo.server.gathering.transport.HttpTransport` session must stay on the loop that created it. So one
private event loop runs in a daemon thread (:class:`LoopThread`) for the gatherer's whole life;
each :meth:`AsyncGatherer.gather` submits one round with ``run_coroutine_threadsafe`` and waits.

A round is planned exactly as the simulator plans it: ``plan_dispatch`` over the first M
experts of each question (primaries), the rest of ``request.experts[q]`` is the over-selection
reserve, then :func:`fedgrpo.rounds.build_plan`; the pure :class:`fedgrpo.rounds.RoundState`
decides what counts. Rewards come back in the trainer's layout via
:meth:`RoundOutcome.rewards_by_expert`, NaN = missing (failed, late, cancelled, offline).

Asynchronous rounds (``max_staleness`` given): stragglers are not cancelled at the close but
keep running on the loop for up to ``max_staleness`` deadlines; their results come back with a
later round's :class:`GatherResult` as ``late`` rewards (``outstanding`` marks what was still
out at the close), a client still busy with one is not asked again (:meth:`idle_clients`),
and stragglers more than ``max_staleness`` rounds old are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from fedgrpo.edge.protocol import CompetenceRequest, ScoreRequest
from fedgrpo.rounds import (
    Assignment,
    AssignmentStatus,
    RoundOutcome,
    RoundPolicy,
    RoundStats,
    build_plan,
    request_builder,
    round_stats,
)
from fedgrpo.rounds.dispatch import plan_dispatch
from fedgrpo.server.gathering.base import GatherRequest, GatherResult, LateReward, idle_clients
from fedgrpo.server.gathering.http import LateWork, gather_round
from fedgrpo.server.gathering.late import late_rewards, outstanding_slots
from fedgrpo.server.gathering.transport import (
    ClientEndpoint,
    HttpTransport,
    Transport,
    TransportError,
)

__all__ = ["AsyncGatherer", "LoopThread", "outcome_record", "scale_policy"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running forever in a daemon thread; ``run(coro)`` blocks for it."""

    def __init__(self, name: str = "fedgrpo-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self._thread:
            raise RuntimeError("LoopThread.run called from its own loop (would deadlock)")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:  # Ctrl-C or timeout while waiting: do not leave the round running
            future.cancel()
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel what is left on the loop, stop it, join the thread, close the loop."""
        if self.loop.is_closed():
            return

        async def _cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result(timeout + 1)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()


def scale_policy(policy: RoundPolicy, time_scale: float) -> RoundPolicy:
    """The same round semantics in a time-scaled world (deadline, backoff, min remaining)."""
    from dataclasses import replace

    return replace(
        policy,
        deadline_s=policy.deadline_s * time_scale,
        retry_backoff_s=policy.retry_backoff_s * time_scale,
        retry_min_remaining_s=policy.retry_min_remaining_s * time_scale,
    )


def outcome_record(
    outcome: RoundOutcome, labels: Sequence[str], time_scale: float = 1.0
) -> RoundStats:
    """The metrics-file fields of one real round (same keys as the simulator's)."""
    reports = list(outcome.assignments)
    participation: dict[str, int] = {}
    for rep in reports:
        if rep.status is AssignmentStatus.ANSWERED:
            label = labels[rep.assignment.client_id]
            participation[label] = participation.get(label, 0) + 1
    offline = sum(1 for rep in reports for f in rep.failures if "offline" in f.lower())
    crashed = sum(1 for rep in reports for f in rep.failures if "crash" in f.lower())
    wall = outcome.duration_s
    # server-side estimate: time in flight of work that produced nothing usable
    wasted = 0.0
    for rep in reports:
        if rep.status is not AssignmentStatus.ANSWERED and rep.first_sent_at is not None:
            end = rep.resolved_at if rep.resolved_at is not None else outcome.t_close
            wasted += max(0.0, end - rep.first_sent_at)
    return round_stats(
        outcome.counts(),
        offline=offline,
        crashed=crashed,
        closed_by=outcome.closed_by,
        # in device-profile seconds (wall / time_scale), comparable with sim mode
        duration_s=wall / time_scale,
        wasted_device_s=wasted / time_scale,
        participation=participation,
        wall_duration_s=wall,
    )


class _LateBook:
    """Async rounds' stragglers: their tasks, their rounds' expert lists, their results.
    Results are appended on the loop thread and drained by the caller's, under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: list[LateReward] = []
        self.experts: dict[int, list[list[int]]] = {}
        self.tasks: dict[int, list[tuple[Assignment, asyncio.Task[None]]]] = {}
        self.round = 0
        self.max_staleness = 0

    def open_round(
        self, request: GatherRequest, max_staleness: int | None, deadline_s: float
    ) -> LateWork | None:
        if max_staleness is None:
            return None
        r = self.round = request.round_index
        self.max_staleness = max_staleness
        self.experts[r] = [list(x) for x in request.experts]
        for old in [k for k in self.experts if k < r - max_staleness]:
            del self.experts[old]

        def on_result(a: Assignment, values: Sequence[float]) -> None:
            if r in self.experts:
                with self.lock:
                    self.results.extend(late_rewards(r, a, values, self.experts[r]))

        work = LateWork(keep_s=max_staleness * deadline_s, on_result=on_result)
        self.tasks[r] = work.tasks
        return work

    def cancel_too_stale(self) -> None:
        """On the loop: cancel stragglers whose result would be too stale to use."""
        for k in [k for k in self.tasks if k < self.round - self.max_staleness]:
            for _a, task in self.tasks.pop(k):
                task.cancel()

    def busy(self) -> set[int]:
        return {a.client_id for ts in list(self.tasks.values()) for a, t in ts if not t.done()}

    def drain(self) -> list[LateReward]:
        with self.lock:
            out, self.results = self.results, []
        return out


class AsyncGatherer:
    """The trainer's :class:`~fedgrpo.server.gathering.base.RewardGatherer` over a real async transport.

    ``policy`` is used as given (scale it first with :func:`scale_policy` in emulate mode).
    The last ``reserve_per_question`` experts of each question's list are the over-selection
    reserve (the runner ranks M + k experts for ``round_policy.over_selection: k``); the
    others are the primaries that share the candidates (all of them by default, as
    :class:`~fedgrpo.server.gathering.inprocess.DirectGatherer` does). ``labels[k]`` names client k in the participation stats (device
    profile). ``extra_stats`` (optional) returns cumulative counters (e.g. the fault proxies'
    injected crashes); their per-round increase is added to the stats.
    """

    def __init__(
        self,
        endpoints: Sequence[ClientEndpoint] | Mapping[int, ClientEndpoint],
        policy: RoundPolicy,
        transport: Transport | None = None,
        dispatch_mode: str = "split",
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        labels: Sequence[str] | None = None,
        reserve_per_question: int = 0,
        time_scale: float = 1.0,
        competence_timeout_s: float = 300.0,
        extra_stats: Callable[[], Mapping[str, int]] | None = None,
        max_staleness: int | None = None,
    ) -> None:
        eps = list(endpoints.values()) if isinstance(endpoints, Mapping) else list(endpoints)
        self.endpoints = {ep.client_id: ep for ep in eps}
        self.policy = policy
        self.transport: Transport = transport if transport is not None else HttpTransport()
        self.dispatch_mode = dispatch_mode
        self.reward_mode = reward_mode
        self.format_weight = format_weight
        n = max(self.endpoints, default=-1) + 1
        self.labels = list(labels) if labels is not None else [f"client-{k}" for k in range(n)]
        self.reserve = reserve_per_question
        self.time_scale = time_scale
        self.competence_timeout_s = competence_timeout_s
        self.extra_stats = extra_stats
        self._extra_last: dict[str, int] = dict(extra_stats()) if extra_stats else {}
        self.last_outcome: RoundOutcome | None = None
        self._loop = LoopThread("fedgrpo-gatherer")
        self._closed = False
        self.max_staleness = max_staleness
        self._late = _LateBook()

    # ----------------------------------------------------------------- rounds

    def _traffic(self) -> tuple[int, int]:
        traffic = getattr(self.transport, "traffic", None)
        return traffic.totals() if traffic is not None else (0, 0)

    def gather(self, request: GatherRequest, rng: np.random.Generator) -> GatherResult:
        if self._closed:
            raise RuntimeError("AsyncGatherer is closed")
        g = len(request.candidates[0]) if request.candidates else 0
        dispatch = []
        for experts in request.experts:
            primaries = list(experts[: max(1, len(experts) - self.reserve)])
            dispatch.append(
                plan_dispatch(g, primaries, mode=self.dispatch_mode, rng=rng) if primaries else {}
            )
        plan = build_plan(
            request.experts,
            dispatch,
            [len(c) for c in request.candidates],
            self.policy,
            round_id=f"r{request.round_index}",
        )
        build = request_builder(
            request.questions, request.candidates, self.reward_mode, self.format_weight
        )
        sent0, recv0 = self._traffic()
        late = self._late.open_round(request, self.max_staleness, self.policy.deadline_s)
        if late is not None:
            self._loop.loop.call_soon_threadsafe(self._late.cancel_too_stale)
        outcome = self._loop.run(
            gather_round(plan, self.policy, self.transport, self.endpoints, build, late=late)
        )
        sent1, recv1 = self._traffic()
        self.last_outcome = outcome
        stats = outcome_record(outcome, self.labels, self.time_scale)
        stats["bytes_sent"] = sent1 - sent0
        stats["bytes_received"] = recv1 - recv0
        if self.extra_stats is not None:
            self._add_injected(stats)
        for rep in outcome.assignments:
            if rep.failures:
                log.debug("%s: %s", rep.assignment.assignment_id, "; ".join(rep.failures))
        rewards = outcome.rewards_by_expert(request.experts)
        if late is None:
            return GatherResult(rewards, stats)
        waiting = outstanding_slots(outcome, rewards.shape, request.experts)
        return GatherResult(rewards, stats, waiting, self._late.drain())

    def _add_injected(self, stats: RoundStats) -> None:
        """Add this round's increase of the fault layer's counters (``extra_stats``)."""
        assert self.extra_stats is not None
        now = dict(self.extra_stats())
        delta = {k: v - self._extra_last.get(k, 0) for k, v in now.items()}
        self._extra_last = now
        for k, v in delta.items():
            stats["extra"][f"injected_{k}"] = v
        # the fault layer knows what it injected better than the failure messages tell
        if "offline" in delta:
            stats["offline"] = delta["offline"]
        if "crashed" in delta:
            stats["crashed"] = delta["crashed"]
        # requests to an emulated offline device were never transmitted (bytes count only
        # what was sent, as in sim mode)
        stats["bytes_sent"] -= delta.get("offline_bytes", 0)

    def idle_clients(self, available: Sequence[int] | None) -> Sequence[int] | None:
        """Async: ``available`` without the clients still working on a straggler."""
        return idle_clients(available, self._late.busy(), max(self.endpoints, default=-1) + 1)

    # ----------------------------------------------------------------- competence

    def competence(
        self, clients: Sequence[int], questions: Sequence[str], answers: Sequence[str]
    ) -> dict[int, list[float] | None]:
        """Each client's correctness bits on the auxiliary set, concurrently; a client that
        fails (unreachable, crash, timeout, invalid answer) gets None (the selector's prior)."""
        qs, ans = tuple(questions), tuple(answers)
        return self._ask_each(
            clients, lambda k: CompetenceRequest(f"competence-c{k}", qs, ans), "competence",
            valid=lambda v: 0.0 <= v <= 1.0,
        )  # fmt: skip

    def probe(
        self, requests: Mapping[int, tuple[Sequence[str], Sequence[str]]], round_index: int
    ) -> dict[int, list[float] | None]:
        """Client k's rewards for its probe ``(questions, completions)`` (``grpo/trust.py``),
        sent as an ordinary score request; None for a client that fails."""

        def build(k: int) -> ScoreRequest:
            qs, cs = requests[k]
            return ScoreRequest(
                f"r{round_index}-p{k}", tuple(qs), tuple(cs), self.reward_mode, self.format_weight
            )

        # a private device's rewards may carry additive noise outside [0, 1]
        return self._ask_each(list(requests), build, "probe", valid=math.isfinite)

    def _ask_each(
        self,
        clients: Sequence[int],
        build: Callable[[int], ScoreRequest | CompetenceRequest],
        label: str,
        valid: Callable[[float], bool],
    ) -> dict[int, list[float] | None]:
        """Send ``build(k)`` to every client concurrently, outside the timed rounds; a client
        that fails or answers a value that is not ``valid`` gets None."""

        async def one(k: int) -> list[float] | None:
            req = build(k)
            try:
                resp = await self.transport.score(self.endpoints[k], req, self.competence_timeout_s)
            except TransportError as exc:
                log.warning("%s of client %d failed: %s", label, k, exc)
                return None
            values = [float(v) for v in resp.values]
            if len(values) != len(req) or not all(valid(v) for v in values):
                log.warning("%s of client %d is invalid; ignored", label, k)
                return None
            return values

        async def all_() -> list[list[float] | None]:
            return list(await asyncio.gather(*(one(k) for k in clients)))

        start = time.perf_counter()
        results = self._loop.run(all_())
        log.info("%s of %d clients in %.1fs", label, len(clients), time.perf_counter() - start)
        return dict(zip(clients, results))

    # ----------------------------------------------------------------- shutdown

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._loop.alive:
                self._loop.run(self.transport.aclose(), timeout=10)
        except Exception as exc:  # closing must never mask the run's own error
            log.warning("closing the transport failed: %s", exc)
        finally:
            self._loop.stop()

    def __enter__(self) -> AsyncGatherer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
