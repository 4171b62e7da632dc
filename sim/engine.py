"""The discrete-event simulator: devices, network and rounds in virtual time (simpy).

Rounds are driven through :class:`fedgrpo.rounds.RoundState` — the same semantics the live
asyncio gatherer uses; only the waiting differs (``env.now`` instead of the wall clock).
This module runs rounds (:class:`Simulator`, :func:`run_simulation`); the pieces live in

* :mod:`fedgrpo.sim.rewards`: round inputs and sources, reward sources;
* :mod:`fedgrpo.sim.selection`: expert selection and candidate dispatch;
* :mod:`fedgrpo.sim.requests`: the life of one request (send, arrive, compute, deliver);
* :mod:`fedgrpo.sim.events`: the event loop's jobs, devices and rounds in flight;
* :mod:`fedgrpo.sim.result`: :class:`SimResult` and the per-round records.

A request cancelled by the round (over-selected extra no longer needed, round closed) is
dropped if it has not started; running work runs to completion and counts as wasted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import simpy

from fedgrpo.errors import ConfigError
from fedgrpo.rounds import AssignmentStatus, RoundOutcome, RoundState, build_plan
from fedgrpo.sim.config import SimConfig
from fedgrpo.sim.events import Env, Job, RoundRun
from fedgrpo.sim.gcfreeze import GcFreezer
from fedgrpo.sim.requests import RequestSteps, StaleEntry
from fedgrpo.sim.result import SimResult, StaleResult, round_record, settle_records
from fedgrpo.sim.rewards import (
    CompetenceRewards,
    ModelRewards,
    RewardSource,
    RoundInput,
    RoundSource,
    surrogate_rounds,
)
from fedgrpo.sim.rng import server_rng
from fedgrpo.sim.selection import check_experts, dispatch_round, select_experts

__all__ = [
    "CompetenceRewards",
    "ModelRewards",
    "RewardSource",
    "RoundInput",
    "SimResult",
    "Simulator",
    "StaleResult",
    "run_simulation",
    "surrogate_rounds",
]

OnRoundEnd = Callable[[RoundOutcome, dict[str, Any]], Mapping[str, Any] | None]


class Simulator(RequestSteps):
    """One simulated deployment. Use :func:`run_simulation` unless you need the pieces."""

    def __init__(
        self,
        config: SimConfig,
        seed: int = 0,
        reward_source: str | RewardSource = "timing",
        round_source: RoundSource | None = None,
        on_round_end: OnRoundEnd | None = None,
        record_requests: bool = False,
    ) -> None:
        self.config = config
        self.seed = seed
        self.policy = config.policy
        self.w = config.workload
        self.reward = _reward_source(reward_source, config)
        self.round_source = round_source or surrogate_rounds(config)
        self.on_round_end = on_round_end
        self.record_requests = record_requests
        self.env = Env()
        self.rng = server_rng(seed, 0)  # replaced at each round start
        self.events = 0
        self.requests: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self._gc = GcFreezer()
        self.runs: list[RoundRun] = []
        self.stale_buffer: list[StaleEntry] = []
        self.stale_used: list[StaleResult] = []
        # async: (origin round, job) of stragglers left running at a close, until too stale
        self._late_jobs: list[tuple[int, Job]] = []
        self._stale_cancelled = 0  # counted as stale_dropped by the next round's record
        self._init_requests(config.clients)
        self._closed_state = RoundState(build_plan([], [], 0, self.policy), self.policy, 0.0)

    # ----------------------------------------------------------------- rounds

    def busy_clients(self) -> set[int]:
        """Async mode: clients still working on (or queueing) an earlier round's straggler.
        Asking them again would queue the new request behind the old one, so both arrive
        late (the crowd-out of issue 14); selection skips them. Empty in sync mode."""
        if self.config.mode != "async":
            return set()
        return {
            i
            for i, dev in enumerate(self.devices)
            if dev.busy or any(not j.cancelled for j in dev.queue)
        }

    def _cancel_too_stale(self, r: int) -> None:
        """Async mode: stragglers whose result could only arrive more than ``max_staleness``
        rounds late are cancelled (dropped if not started; running work still runs out)."""
        keep = []
        for origin, job in self._late_jobs:
            if r - origin > self.config.max_staleness:
                job.cancelled = True
                if not job.values:  # not computed yet: its result is dropped unseen
                    self._stale_cancelled += 1
            else:
                keep.append((origin, job))
        self._late_jobs = keep

    def _idle_experts(self, domains: list[str]) -> list[list[int]]:
        """The simulator's own selection, over idle clients in async mode when enough are."""
        busy = self.busy_clients()
        n_ask = self.w.experts_per_question + self.policy.over_selection
        idle = [i for i in range(self.n) if i not in busy]
        return select_experts(
            domains, self.config.clients, self.w, self.policy, self.rng,
            available=idle if busy and len(idle) >= n_ask else None,
        )  # fmt: skip

    def _start_round(self, r: int) -> RoundRun:
        self._gc.refreeze()
        self.rng = server_rng(self.seed, r)
        self._cancel_too_stale(r)
        inp = self.round_source(r, self.rng)
        if inp.experts is not None:
            experts = inp.experts
        else:
            experts = self._idle_experts(inp.domains)
        check_experts(r, experts, len(inp.questions), self.n)
        dispatch = dispatch_round(experts, self.w, self.rng)
        plan = build_plan(experts, dispatch, self.w.group_size, self.policy, round_id=f"r{r}")
        self._open_streams(r, plan)
        state = RoundState(plan, self.policy, self.env.now)
        rr = RoundRun(r, state, inp, self.env.event(), [None] * len(plan.assignments))
        self.runs.append(rr)
        for a in state.pending():
            self._send(rr, a, 1)
        self._gc.refreeze()  # the round's plan, state and requests live until its close
        return rr

    def _round_loop(self, env: simpy.Environment, rounds: int) -> Any:
        for r in range(rounds):
            yield from self._one_round(env, r)

    def _one_round(self, env: simpy.Environment, r: int) -> Any:
        rr = self._start_round(r)
        if not rr.state.is_closed():
            self.events += 1
            yield env.any_of([rr.close_ev, env.timeout(self.policy.deadline_s)])
        if not rr.state.is_closed():
            rr.state.on_deadline(env.now)
        self._after(rr)
        self._finish_round(rr)
        if self.config.update_s > 0:
            self.events += 1
            yield env.timeout(self.config.update_s)

    def step_round(self, r: int) -> dict[str, Any]:
        """Run exactly round ``r`` and return its record, for callers that own the loop (the
        trainer: rollout, then this, then its update). Stragglers of this round stay scheduled
        and finish (as waste or stale results) while later rounds run, as in real time."""
        if r != len(self.runs):
            raise ConfigError(f"step_round({r}) out of order; the next round is {len(self.runs)}")
        done = self.env.process(self._one_round(self.env, r))
        with self._gc.frozen():
            self.env.run(until=done)
        return self.records[-1]

    def _take_stale(self, index: int) -> tuple[list[StaleResult], int]:
        """Async mode: the buffered late results round ``index`` uses, and how many were too
        stale (their compute counts as wasted in the round that asked; stragglers cancelled as
        too stale before they finished count here too)."""
        used: list[StaleResult] = []
        dropped, self._stale_cancelled = self._stale_cancelled, 0
        if self.config.mode != "async":
            return used, dropped
        for origin, a, values, compute in self.stale_buffer:
            if index - origin <= self.config.max_staleness:
                used.append(StaleResult(origin, index, a, values))
            else:
                dropped += 1
                self.runs[origin].wasted_s += compute
        self.stale_buffer = []
        self.stale_used.extend(used)
        return used, dropped

    def _finish_round(self, rr: RoundRun) -> None:
        out = rr.state.outcome()
        if self.config.mode == "async":
            late = AssignmentStatus.LATE
            for a, st in zip(out.plan.assignments, out.statuses):
                job = rr.jobs[a.index]
                if st is late and job is not None and not job.cancelled:
                    self._late_jobs.append((rr.index, job))
        stale_used, stale_dropped = self._take_stale(rr.index)
        record = round_record(rr, out, self.profile_names, stale_used, stale_dropped)
        if self.on_round_end is not None:
            extra = self.on_round_end(out, dict(record))
            if extra:
                record.update(extra)
        self.records.append(record)
        # Free the round's bulk: cancellations are done, late results need no state any more.
        rr.jobs = []
        rr.finished = True
        rr.state = self._closed_state

    def run(self, rounds: int) -> SimResult:
        """Run ``rounds`` rounds, then let stragglers finish; the settled result."""
        if not (isinstance(rounds, int) and rounds >= 0):
            raise ConfigError(f"rounds={rounds!r}; give an integer >= 0")
        t0 = time.perf_counter()
        self.env.process(self._round_loop(self.env, rounds))
        with self._gc.frozen():
            self.env.run()  # also lets stragglers finish so waste and bytes are settled
        for origin, _a, _values, compute in self.stale_buffer:  # arrived after the last update
            self.runs[origin].wasted_s += compute
        self.stale_buffer = []
        settle_records(self.runs, self.records)
        wall = time.perf_counter() - t0
        return SimResult(
            self.config, self.seed, self.records, self.requests, wall, self.events, self.stale_used
        )


def _reward_source(reward_source: str | RewardSource, config: SimConfig) -> RewardSource:
    """``"timing"`` → the competence surrogate; a callable is used as it is."""
    if reward_source == "timing":
        return CompetenceRewards(config.clients)
    if isinstance(reward_source, str):
        raise ConfigError(
            f"reward_source {reward_source!r} is unknown; use 'timing' or a callable "
            "(e.g. ModelRewards(reward_fn))"
        )
    return reward_source


def run_simulation(
    config: SimConfig,
    rounds: int,
    seed: int = 0,
    reward_source: str | RewardSource = "timing",
    round_source: RoundSource | None = None,
    on_round_end: OnRoundEnd | None = None,
    record_requests: bool = False,
) -> SimResult:
    """Simulate ``rounds`` rounds in virtual time.

    * ``reward_source``: ``"timing"`` (competence surrogate, fast) or a :class:`RewardSource`
      such as ``ModelRewards(reward_fn)`` with ``reward_fn(client_id, request) -> values``.
    * ``round_source(r, rng) -> RoundInput``: questions (and candidate texts / expert lists) per
      round; default: abstract questions (:func:`surrogate_rounds`).
    * ``on_round_end(outcome, record)``: called at each close (e.g. run the GRPO update on
      ``outcome.usable_rewards()``); a returned dict (e.g. ``{"accuracy": 0.4}``) is merged into
      the round's record.
    * ``record_requests``: also keep one row per request event (for notebooks and tests).
    """
    sim = Simulator(config, seed, reward_source, round_source, on_round_end, record_requests)
    return sim.run(rounds)
