"""The discrete-event simulator: devices, network and rounds in virtual time (simpy).

Rounds are driven through :class:`fedgrpo.rounds.RoundState` — the same semantics the live
asyncio gatherer uses; only the waiting differs (``env.now`` instead of the wall clock).

Life of one request (each arrow is one simpy event)::

    send ──uplink (RTT/2 + bytes/down-bandwidth)──▶ arrive at device
        offline?  → the server notices after ``connect_timeout_s`` (failure; may retry)
        busy?     → wait in the device's FIFO queue (one request at a time: queueing is real)
    start ──compute (prefill + decode tokens / speed, lognormal jitter)──▶ done
        crash (per-request probability, at a uniform point) → the server sees a reset
        the device goes offline before done → silent: never answers
    done ──downlink (RTT/2 + bytes/up-bandwidth)──▶ result at the server → RoundState.on_result

A request cancelled by the round (over-selected extra no longer needed, round closed) is
dropped if it has not started; running work runs to completion and counts as wasted.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any, Protocol

import numpy as np
import simpy
from simpy.events import NORMAL

from fedgrpo.edge.protocol import ScoreRequest, dumps, encode_request
from fedgrpo.errors import ConfigError
from fedgrpo.rounds import (
    Assignment,
    AssignmentStatus,
    Disposition,
    RoundOutcome,
    RoundPlan,
    RoundState,
    build_plan,
    experts_to_ask,
    request_builder,
    validate_values,
)
from fedgrpo.sim.availability import Availability
from fedgrpo.sim.config import ClientSpec, SimConfig
from fedgrpo.sim.devices import size_factor
from fedgrpo.sim.rng import ClientStream, round_streams, server_rng

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


# enum members as globals for the per-request paths (a global is ~15x cheaper to look up)
_ACCEPTED, _LATE, _RETRY = Disposition.ACCEPTED, Disposition.LATE, Disposition.RETRY
#: young-generation GC threshold while the event loop runs (see ``Simulator._gc_frozen``)
_GC_GEN0 = 50_000

# --------------------------------------------------------------------------- inputs


@dataclass
class RoundInput:
    """What a round is about. ``candidates`` (texts) are needed by model-in-the-loop rewards;
    ``correct`` ([B, G] latent truth) by the timing-only surrogate; ``experts`` (ranked lists
    per question, ≥ ⌈M·(1+f)⌉ long) overrides the built-in selector."""

    questions: list[str]
    domains: list[str]
    candidates: list[list[str]] | None = None
    correct: np.ndarray | None = None
    experts: list[list[int]] | None = None


RoundSource = Callable[[int, np.random.Generator], RoundInput]


def surrogate_rounds(config: SimConfig) -> RoundSource:
    """Abstract questions: a uniform domain each, candidates correct with ``policy_accuracy``."""
    w = config.workload

    def source(r: int, rng: np.random.Generator) -> RoundInput:
        doms = rng.integers(0, len(w.domains), size=w.questions_per_round).tolist()
        domains = [w.domains[d] for d in doms]
        correct = rng.random((w.questions_per_round, w.group_size)) < w.policy_accuracy
        return RoundInput([f"r{r}q{b}" for b in range(len(domains))], domains, None, correct)

    return source


class RewardSource(Protocol):
    """Values a client returns for an assignment (called at the virtual time it finishes)."""

    def __call__(
        self, client_id: int, assignment: Assignment, round_input: RoundInput, stream: ClientStream
    ) -> Sequence[float]: ...


class CompetenceRewards:
    """Timing-only surrogate: the client judges each candidate right with probability
    ``competence[client][domain]`` (1 if the latent candidate is correct, else 0; flipped when
    the judgement is wrong). Draws come from the client's own ``reward`` stream."""

    def __init__(self, clients: Sequence[ClientSpec]) -> None:
        self._comp = [c.competence for c in clients]
        # per-client constant competence as a float (None: per-domain mapping)
        self._flat = [None if isinstance(c, Mapping) else float(c) for c in self._comp]
        # the latent truth of recent round inputs as Python lists (async stragglers score
        # earlier rounds' inputs): [(input, rows)], most recent first
        self._cache: list[tuple[RoundInput, list[list[bool]] | None]] = []

    def __call__(
        self, client_id: int, assignment: Assignment, round_input: RoundInput, stream: ClientStream
    ) -> list[float]:
        p = self._flat[client_id]
        if p is None:
            comp = self._comp[client_id]
            assert isinstance(comp, Mapping)
            p = float(comp.get(round_input.domains[assignment.group], 0.5))
        rows = self._truth_rows(round_input)
        cands = assignment.candidates
        us = stream.uniforms(len(cands))  # one draw per candidate, in order
        if rows is None:
            return [1.0 if u < p else 0.0 for u in us]
        row = rows[assignment.group]
        return [1.0 if row[c] == (u < p) else 0.0 for c, u in zip(cands, us)]

    def _truth_rows(self, inp: RoundInput) -> list[list[bool]] | None:
        cache = self._cache
        if cache and cache[0][0] is inp:
            return cache[0][1]
        for k, (seen, rows) in enumerate(cache):
            if seen is inp:
                cache.insert(0, cache.pop(k))
                return rows
        truth = inp.correct
        rows = None if truth is None else np.asarray(truth, dtype=bool).tolist()
        cache.insert(0, (inp, rows))
        del cache[8:]
        return rows


class ModelRewards:
    """Model-in-the-loop: ``reward_fn(client_id, request) -> values`` computes real rewards
    (e.g. an in-process ONNX scorer); time stays virtual. Needs candidate texts."""

    def __init__(
        self,
        reward_fn: Callable[[int, ScoreRequest], Sequence[float]],
        reward_mode: str = "auto",
        format_weight: float = 0.0,
    ) -> None:
        self.reward_fn = reward_fn
        self.reward_mode, self.format_weight = reward_mode, format_weight

    def request(self, assignment: Assignment, round_input: RoundInput) -> ScoreRequest:
        if round_input.candidates is None:
            raise ConfigError(
                "model-in-the-loop rewards need candidate texts; the round source must fill "
                "RoundInput.candidates"
            )
        build = request_builder(
            round_input.questions, round_input.candidates, self.reward_mode, self.format_weight
        )
        return build(assignment)

    def __call__(
        self, client_id: int, assignment: Assignment, round_input: RoundInput, stream: ClientStream
    ) -> Sequence[float]:
        return self.reward_fn(client_id, self.request(assignment, round_input))


@dataclass(frozen=True)
class StaleResult:
    """An async-mode result used in a later update than the round that asked for it."""

    origin_round: int
    used_in_round: int
    assignment: Assignment
    values: tuple[float, ...]

    @property
    def staleness(self) -> int:
        return self.used_in_round - self.origin_round


# --------------------------------------------------------------------------- internals


class _Job:
    """One attempt of one assignment. It is also its own event in the simpy queue: a request
    has at most one pending step at a time, so each step sets ``fn`` and pushes the job with
    :meth:`_Env.push` (same priority and ordering as a ``simpy.Timeout``, without an event
    object per step); :meth:`_Env.step` calls ``fn(job)`` when it pops it."""

    __slots__ = (
        "a",
        "attempt",
        "cancelled",
        "cid",
        "compute",
        "crash_at",
        "crash_u",
        "dev",
        "fn",
        "half",
        "online_until",
        "req_bytes",
        "resp_bytes",
        "rr",
        "rstream",
        "t_sent",
        "t_start",
        "values",
    )
    # set when the step that needs them runs (_send, _arrive, _timeout)
    fn: Callable[[_Job], None]
    half: float
    compute: float
    crash_u: float
    crash_at: float
    req_bytes: int
    resp_bytes: int
    online_until: float
    rstream: ClientStream | None

    def __init__(
        self, rr: _RoundRun, a: Assignment, attempt: int, t_sent: float, dev: _Device
    ) -> None:
        self.rr, self.a, self.attempt, self.cid, self.dev = rr, a, attempt, a.client_id, dev
        self.cancelled = False
        self.t_start = -1.0
        self.t_sent = t_sent
        self.values: list[float] = []


class _Device:
    """One client's constants and state in one object: a step does one lookup, and what it
    touches sits together in memory (10k clients' tables do not fit in the CPU caches)."""

    __slots__ = (
        "avail",
        "busy",
        "crash_p",
        "down_bps",
        "queue",
        "req",
        "reward",
        "rtt_mu",
        "rtt_sigma",
        "sec_fixed",
        "sec_per_cand",
        "speed_sigma",
        "stream_round",
        "up_bps",
    )

    def __init__(self, avail: Availability) -> None:
        self.avail = avail
        self.busy = False
        self.queue: deque[_Job] = deque()
        # this round's random streams (set at the start of each round the client is asked in)
        self.req: ClientStream | None = None
        self.reward: ClientStream | None = None
        self.stream_round = -1
        self.rtt_mu = self.rtt_sigma = self.speed_sigma = 0.0
        self.sec_fixed = 0.0  # overhead + decode per request
        self.sec_per_cand = 0.0  # prefill time per candidate
        self.down_bps = self.up_bps = self.crash_p = 0.0


class _Env(simpy.Environment):
    """simpy's environment with a fast path for request steps.

    Jobs share simpy's queue and ordering key ``(time, priority, id)``, so they interleave with
    round timeouts and processes exactly as ``simpy.Timeout`` events would; but popping a job
    calls its step directly instead of going through ``Event.callbacks`` (a job never fails
    and has one consumer). Consecutive jobs are handled in one ``step`` call."""

    def push(self, job: _Job, delay: float) -> None:
        """Schedule ``job.fn(job)`` in ``delay`` seconds (``NORMAL`` priority, FIFO on ties)."""
        # a job stands in for an Event in simpy's queue (typed as Event entries)
        entry: Any = (self._now + delay, NORMAL, next(self._eid), job)
        heappush(self._queue, entry)

    def step(self) -> None:
        queue = self._queue
        while queue:
            top = queue[0]
            job = top[3]
            if type(job) is not _Job:
                break
            heappop(queue)
            self._now = top[0]
            job.fn(job)
        super().step()  # a simpy event (or EmptySchedule when the queue is empty)


@dataclass(eq=False)
class _RoundRun:
    index: int
    state: RoundState
    inp: RoundInput
    close_ev: simpy.Event
    jobs: list[_Job | None] = field(default_factory=list)  # latest attempt per plan index
    crashed: int = 0
    offline: int = 0
    busy_s: float = 0.0
    wasted_s: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    evals: int = 0
    late_arrivals: int = 0
    finished: bool = False


@dataclass
class SimResult:
    """Per-round records (dicts, JSON-ready), optional per-request rows, and run totals."""

    config: SimConfig
    seed: int
    rounds: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    wall_s: float
    events: int
    stale: list[StaleResult] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        """Scoring requests a device computed to completion."""
        return sum(r["evals"] for r in self.rounds)

    def column(self, key: str) -> list[Any]:
        return [r[key] for r in self.rounds]

    def participation(self) -> dict[str, dict[str, int]]:
        """profile → {asked, answered} over the run."""
        out: dict[str, dict[str, int]] = {}
        for r in self.rounds:
            for prof, d in r["participation"].items():
                agg = out.setdefault(prof, {"asked": 0, "answered": 0})
                agg["asked"] += d["asked"]
                agg["answered"] += d["answered"]
        return out

    def summary(self) -> dict[str, Any]:
        dur = np.array(self.column("duration_s"), dtype=float)
        cov = np.array(self.column("coverage_mean"), dtype=float)
        return {
            "rounds": len(self.rounds),
            "clients": len(self.config.clients),
            "virtual_s": float(self.rounds[-1]["t_close"]) if self.rounds else 0.0,
            "round_duration_p50_s": float(np.median(dur)) if dur.size else 0.0,
            "round_duration_p90_s": float(np.quantile(dur, 0.9)) if dur.size else 0.0,
            "coverage_mean": float(cov.mean()) if cov.size else 0.0,
            "evaluations": self.evaluations,
            "wasted_device_s": float(sum(self.column("wasted_device_s"))),
            "bytes_sent": int(sum(self.column("bytes_sent"))),
            "bytes_received": int(sum(self.column("bytes_received"))),
            "wall_s": self.wall_s,
            "events": self.events,
        }


OnRoundEnd = Callable[[RoundOutcome, dict[str, Any]], Mapping[str, Any] | None]


class Simulator:
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
        if reward_source == "timing":
            self.reward: RewardSource = CompetenceRewards(config.clients)
        elif isinstance(reward_source, str):
            raise ConfigError(
                f"reward_source {reward_source!r} is unknown; use 'timing' or a callable "
                "(e.g. ModelRewards(reward_fn))"
            )
        else:
            self.reward = reward_source
        self.round_source = round_source or surrogate_rounds(config)
        self.on_round_end = on_round_end
        self.record_requests = record_requests
        self.env = _Env()
        self._push = self.env.push
        self.rng = server_rng(seed, 0)  # replaced at each round start
        self.events = 0
        self.requests: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self._freezing = False
        self.runs: list[_RoundRun] = []
        self.stale_buffer: list[tuple[int, Assignment, tuple[float, ...], float]] = []
        self.stale_used: list[StaleResult] = []
        self._setup_clients(config.clients)
        # bound once: a bound method per scheduled step would be one more object per event
        self._h_arrive = self._arrive
        self._h_offline_fail = self._offline_fail
        self._h_crash = self._crash
        self._h_drop = self._drop
        self._h_done = self._done
        self._h_crash_fail = self._crash_fail
        self._h_deliver = self._deliver
        self._closed_state = RoundState(build_plan([], [], 0, self.policy), self.policy, 0.0)

    # ----------------------------------------------------------------- clients

    def _setup_clients(self, clients: Sequence[ClientSpec]) -> None:
        w = self.w
        n = len(clients)
        self.n = n
        self.profile_names: list[str] = []
        self.devices: list[_Device] = []
        tokens_per_cand = w.question_tokens + w.completion_tokens
        for cid, spec in enumerate(clients):
            p = spec.device
            speed = size_factor(spec.size_class) * spec.speed_factor
            self.profile_names.append(p.name)
            d = _Device(self._availability(cid, spec))
            d.rtt_mu = math.log(p.rtt_median_s)
            d.rtt_sigma = p.rtt_sigma
            d.sec_per_cand = tokens_per_cand / (p.prefill_tok_s * speed)
            d.sec_fixed = p.overhead_s + w.decode_tokens / (p.decode_tok_s * speed)
            d.speed_sigma = p.speed_sigma
            down = spec.bandwidth_mbps or p.down_mbps
            up = spec.bandwidth_mbps or p.up_mbps
            d.down_bps = down * 1e6 / 8
            d.up_bps = up * 1e6 / 8
            d.crash_p = p.crash_prob
            self.devices.append(d)
        chars = w.chars_per_token
        self._est_bytes_per_cand = int((w.question_tokens + w.completion_tokens) * chars) + 8
        cfg = self.config
        self._req_overhead = cfg.request_overhead_bytes
        self._resp_overhead = cfg.response_overhead_bytes
        self._resp_per_value = cfg.response_bytes_per_value
        self._cancel_queued = cfg.cancel_queued
        self._model_bytes = isinstance(self.reward, ModelRewards)

    def _open_streams(self, r: int, plan: RoundPlan) -> None:
        """Round ``r``'s request and reward streams for every client in its plan, prefilled
        with what the plan needs (2 normals + 2 uniforms per request, 1 uniform per
        candidate); retries extend a stream on demand."""
        reqs: dict[int, int] = {}
        cands: dict[int, int] = {}
        for a in plan.assignments:
            c = a.client_id
            reqs[c] = reqs.get(c, 0) + 1
            cands[c] = cands.get(c, 0) + len(a.candidates)
        self._set_streams(r, list(reqs), [2 * reqs[c] for c in reqs], [cands[c] for c in reqs])

    def _set_streams(self, r: int, clients: list[int], n_req: list[int], n_cand: list[int]) -> None:
        req = round_streams(self.seed, r, clients, "request", n_req, n_req)
        prefill = n_cand if isinstance(self.reward, CompetenceRewards) else [0] * len(clients)
        rew = round_streams(self.seed, r, clients, "reward", prefill)
        for c, s_req, s_rew in zip(clients, req, rew):
            dev = self.devices[c]
            dev.req, dev.reward, dev.stream_round = s_req, s_rew, r

    def _availability(self, cid: int, spec: ClientSpec) -> Availability:
        return spec.availability.build(spec.device, self.seed, cid)

    # ----------------------------------------------------------------- selection

    def _select(self, inp: RoundInput) -> list[list[int]]:
        n_ask = experts_to_ask(self.w.experts_per_question, self.policy.over_selection)
        b = len(inp.questions)
        if self.w.selector == "random":
            out = []
            draws = self.rng.integers(0, self.n, size=(b, n_ask + 4)).tolist()
            for row in draws:
                pick = list(dict.fromkeys(row))[:n_ask]
                if len(pick) < n_ask:
                    pick = self.rng.permutation(self.n)[:n_ask].tolist()
                out.append(pick)
            return out
        # "top": best competence on the question's domain, ties broken by a per-round shuffle
        ranking: dict[str, list[int]] = {}
        noise = self.rng.random(self.n)
        for d in set(inp.domains):
            comp = np.array([c.competence_on(d) for c in self.config.clients])
            ranking[d] = np.lexsort((noise, -comp))[:n_ask].tolist()
        return [list(ranking[d]) for d in inp.domains]

    def _dispatch(self, experts: list[list[int]]) -> list[dict[int, list[int]]]:
        g, m = self.w.group_size, self.w.experts_per_question
        out: list[dict[int, list[int]]] = []
        if self.w.dispatch == "broadcast":
            return [{e: list(range(g)) for e in ex[:m]} for ex in experts]
        # one permutation of the G candidates per question; drawn in one call (row by row it
        # consumes the server stream exactly like successive ``rng.permutation(g)`` calls)
        perms = self.rng.permuted(np.tile(np.arange(g), (len(experts), 1)), axis=1).tolist()
        for ex, perm in zip(experts, perms):
            prim = ex[:m]
            k, extra = divmod(g, len(prim))
            shards, start = {}, 0
            for j, e in enumerate(prim):
                size = k + (1 if j < extra else 0)
                if size:
                    shards[e] = sorted(perm[start : start + size])
                start += size
            out.append(shards)
        return out

    # ----------------------------------------------------------------- request life

    def _timeout(self, delay: float, fn: Callable[[_Job], None], job: _Job) -> None:
        # Same priority and ordering as a simpy.Timeout (NORMAL = 1, FIFO by insertion).
        self.events += 1
        job.fn = fn
        self._push(job, delay)

    def _send(self, rr: _RoundRun, a: Assignment, attempt: int) -> None:
        now = self.env._now  # env.now without the property call (also in the steps below)
        rr.state.on_sent(a, now)
        cid = a.client_id
        dev = self.devices[cid]
        if dev.stream_round != rr.index:  # a client added to the plan after it was built
            self._set_streams(rr.index, [cid], [2], [len(a.candidates)])
        s = dev.req
        assert s is not None
        job = _Job(rr, a, attempt, now, dev)
        job.rstream = dev.reward  # a straggler scores with its own round's stream
        rr.jobs[a.index] = job
        k = len(a.candidates)
        # fixed draws per request keep each client's stream aligned across scenarios
        z_rtt, z_speed = s.normals(2)
        job.crash_u, job.crash_at = s.uniforms(2)
        rtt = math.exp(dev.rtt_mu + dev.rtt_sigma * z_rtt)
        jitter = math.exp(dev.speed_sigma * z_speed)
        half = job.half = rtt / 2
        job.compute = (dev.sec_fixed + k * dev.sec_per_cand) * jitter
        req_bytes = (
            self._request_bytes(rr, a)
            if self._model_bytes
            else self._req_overhead + k * self._est_bytes_per_cand
        )
        job.resp_bytes = self._resp_overhead + k * self._resp_per_value
        job.req_bytes = req_bytes
        rr.bytes_sent += req_bytes
        self.events += 1  # inline _timeout
        job.fn = self._h_arrive
        self._push(job, half + req_bytes / dev.down_bps)

    def _request_bytes(self, rr: _RoundRun, a: Assignment) -> int:
        if isinstance(self.reward, ModelRewards) and rr.inp.candidates is not None:
            return len(dumps(encode_request(self.reward.request(a, rr.inp))))
        return self.config.request_overhead_bytes + len(a.candidates) * self._est_bytes_per_cand

    def _arrive(self, job: _Job) -> None:
        if job.cancelled and self._cancel_queued:
            return
        dev = job.dev
        until = dev.avail.online_until(self.env._now)
        if until is None:
            job.rr.offline += 1
            job.rr.bytes_sent -= job.req_bytes  # no connection: the request never went out
            delay = max(0.0, job.t_sent + self.config.connect_timeout_s - self.env.now)
            self._timeout(delay, self._h_offline_fail, job)
            return
        job.online_until = until
        if dev.busy:
            dev.queue.append(job)
        else:
            self._start(job)

    def _start(self, job: _Job) -> None:
        dev = job.dev
        now = self.env._now
        if job.cancelled and self._cancel_queued:
            self._next(dev)
            return
        until = job.online_until
        if now > until:  # went offline while the request waited in the queue: lost
            job.rr.offline += 1
            if self.record_requests:
                self._record(job, "offline_in_queue")
            self._next(dev)
            return
        dev.busy = True
        job.t_start = now
        end = now + job.compute
        if job.crash_u < dev.crash_p:
            t_crash = now + job.compute * job.crash_at
            if t_crash < until:
                self._timeout(t_crash - now, self._h_crash, job)
                return
        if until < end:
            self._timeout(until - now, self._h_drop, job)
            return
        self.events += 1  # inline _timeout
        job.fn = self._h_done
        self._push(job, job.compute)

    def _next(self, dev: _Device) -> None:
        dev.busy = False
        q = dev.queue
        if q:
            self._start(q.popleft())

    def _spent(self, job: _Job, wasted: bool) -> float:
        spent = self.env.now - job.t_start
        job.rr.busy_s += spent
        if wasted:
            job.rr.wasted_s += spent
        return spent

    def _crash(self, job: _Job) -> None:
        self._spent(job, wasted=True)
        job.rr.crashed += 1
        self._next(job.dev)
        if self.record_requests:
            self._record(job, "crashed")
        self._timeout(job.half, self._h_crash_fail, job)

    def _drop(self, job: _Job) -> None:
        self._spent(job, wasted=True)
        job.rr.offline += 1
        if self.record_requests:
            self._record(job, "offline_mid_request")
        self._next(job.dev)

    def _done(self, job: _Job) -> None:
        dev = job.dev
        rr = job.rr
        # inline _next(dev): the device takes its next queued request
        dev.busy = False
        q = dev.queue
        if q:
            self._start(q.popleft())
        rr.evals += 1
        spent = self.env._now - job.t_start
        rr.busy_s += spent
        if job.cancelled:  # over-selected extra no longer needed, or cut at a sync close
            rr.wasted_s += spent
            if self.record_requests:
                self._record(job, "cancelled_running")
            return
        cid = job.cid
        stream = job.rstream
        assert stream is not None
        job.values = list(self.reward(cid, job.a, rr.inp, stream))
        self.events += 1  # inline _timeout
        job.fn = self._h_deliver
        self._push(job, job.half + job.resp_bytes / dev.up_bps)

    def _deliver(self, job: _Job) -> None:
        values = job.values
        rr = job.rr
        now = self.env._now
        rr.bytes_received += job.resp_bytes
        if rr.finished:  # the round's outcome is final: anything now is late
            disp = _LATE
        else:
            disp = rr.state.on_result(job.a.assignment_id, values, now)
        if disp is _ACCEPTED:
            used = rr.state.used(job.a)
            if used < len(job.a.candidates):  # surplus values: that share of the work is wasted
                rr.wasted_s += job.compute * (1 - used / len(job.a.candidates))
        elif (
            disp is _LATE
            and self.config.mode == "async"
            and validate_values(values, len(job.a.candidates), self.policy.reward_range) is None
        ):
            rr.late_arrivals += 1  # kept for a later update; wasted only if it gets too stale
            self.stale_buffer.append((rr.index, job.a, tuple(values), job.compute))
        else:
            rr.wasted_s += job.compute
            if disp is _LATE:
                rr.late_arrivals += 1
            elif disp is _RETRY:
                self._retry(rr, job)
        if self.record_requests:
            self._record(job, disp.value)
        self._after(rr)

    def _offline_fail(self, job: _Job) -> None:
        if self.record_requests:
            self._record(job, "offline")
        self._fail(job, "connect: device offline (connect timeout)")

    def _crash_fail(self, job: _Job) -> None:
        self._fail(job, "connect: connection reset (device crashed)")

    def _fail(self, job: _Job, reason: str) -> None:
        rr = job.rr
        if rr.finished:
            return
        if rr.state.on_failure(job.a.assignment_id, reason, self.env.now):
            self._retry(rr, job)
        self._after(rr)

    def _retry(self, rr: _RoundRun, job: _Job) -> None:
        backoff = self.policy.retry_backoff_s

        def resend(_e: object) -> None:
            aid = job.a.assignment_id
            if not rr.state.is_closed() and rr.state.status(aid) is AssignmentStatus.PENDING:
                self._send(rr, job.a, job.attempt + 1)

        if backoff > 0:
            self.events += 1
            self.env.timeout(backoff).callbacks.append(resend)
        else:
            self._send(rr, job.a, job.attempt + 1)

    def _after(self, rr: _RoundRun) -> None:
        if rr.finished:
            return
        closing = rr.state.is_closed()
        for a in rr.state.to_cancel():
            job = rr.jobs[a.index]
            if job is None:
                continue
            if closing and self.config.mode == "async":
                continue  # FedBuff-style: stragglers keep working for a later update
            job.cancelled = True
        if closing and not rr.close_ev.triggered:
            rr.close_ev.succeed()

    def _record(self, job: _Job, what: str) -> None:
        """One request row (callers check ``record_requests`` first)."""
        self.requests.append(
            {
                "round": job.rr.index,
                "assignment_id": job.a.assignment_id,
                "client": job.a.client_id,
                "profile": self.profile_names[job.a.client_id],
                "attempt": job.attempt,
                "event": what,
                "t_sent": job.t_sent,
                "t": self.env.now,
                "latency_s": self.env.now - job.t_sent,
                "compute_s": job.compute,
                "queue_s": (job.t_start - job.t_sent - job.half) if job.t_start >= 0 else None,
            }
        )

    # ----------------------------------------------------------------- rounds

    def _start_round(self, r: int) -> _RoundRun:
        if self._freezing:
            gc.freeze()
        self.rng = server_rng(self.seed, r)
        inp = self.round_source(r, self.rng)
        experts = inp.experts if inp.experts is not None else self._select(inp)
        if len(experts) != len(inp.questions):
            raise ConfigError(
                f"round {r}: {len(experts)} expert lists for {len(inp.questions)} questions"
            )
        for ex in experts:
            for e in ex:
                if not 0 <= e < self.n:
                    raise ConfigError(f"round {r}: expert {e} is not a client (0..{self.n - 1})")
        dispatch = self._dispatch(experts)
        plan: RoundPlan = build_plan(
            experts, dispatch, self.w.group_size, self.policy, round_id=f"r{r}"
        )
        self._open_streams(r, plan)
        state = RoundState(plan, self.policy, self.env.now)
        rr = _RoundRun(r, state, inp, self.env.event(), [None] * len(plan.assignments))
        self.runs.append(rr)
        for a in state.pending():
            self._send(rr, a, 1)
        if self._freezing:  # the round's plan, state and requests live until its close
            gc.freeze()
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

    @contextlib.contextmanager
    def _gc_frozen(self) -> Iterator[None]:
        """Keep the cyclic GC from rescanning long-lived objects on each of its full
        collections while the event loop allocates. ``gc.freeze()`` on entry and again at each
        round start moves everything alive then (client tables and random streams, the
        config, earlier rounds' records, the caller's objects) out of the collector's sight;
        ``gc.unfreeze()`` on exit hands it all back, so nothing is leaked (a cycle that became
        garbage meanwhile is collected after the run). A full collection then scans only the
        current round's objects. Skipped when the GC is off or someone else has frozen
        objects (their freeze is theirs to undo).

        The young-generation threshold is also raised to ``_GC_GEN0`` meanwhile (restored on
        exit): each request allocates ~10 tracked objects (its job, queue entries, values), so
        the default 700 runs a young collection every ~70 requests, which costs ~10% of the
        loop at 10k clients; the loop makes almost no cyclic garbage to find."""
        if not gc.isenabled() or gc.get_freeze_count() or self._freezing:
            yield
            return
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], _GC_GEN0), *threshold[1:])
        gc.freeze()
        self._freezing = True
        try:
            yield
        finally:
            self._freezing = False
            gc.unfreeze()
            gc.set_threshold(*threshold)

    def step_round(self, r: int) -> dict[str, Any]:
        """Run exactly round ``r`` and return its record, for callers that own the loop (the
        trainer: rollout, then this, then its update). Stragglers of this round stay scheduled
        and finish (as waste or stale results) while later rounds run, as in real time."""
        if r != len(self.runs):
            raise ConfigError(f"step_round({r}) out of order; the next round is {len(self.runs)}")
        done = self.env.process(self._one_round(self.env, r))
        with self._gc_frozen():
            self.env.run(until=done)
        return self.records[-1]

    def _finish_round(self, rr: _RoundRun) -> None:
        out = rr.state.outcome()
        stale_used = []
        stale_dropped = 0
        if self.config.mode == "async":
            for origin, a, values, compute in self.stale_buffer:
                if rr.index - origin <= self.config.max_staleness:
                    stale_used.append(StaleResult(origin, rr.index, a, values))
                else:
                    stale_dropped += 1
                    self.runs[origin].wasted_s += compute
            self.stale_buffer = []
            self.stale_used.extend(stale_used)
        record = self._record_round(rr, out)
        record["stale_used"] = len(stale_used)
        record["stale_dropped"] = stale_dropped
        record["staleness_mean"] = (
            float(np.mean([s.staleness for s in stale_used])) if stale_used else None
        )
        if self.on_round_end is not None:
            extra = self.on_round_end(out, dict(record))
            if extra:
                record.update(extra)
        self.records.append(record)
        # Free the round's bulk: cancellations are done, late results need no state any more.
        rr.jobs = []
        rr.finished = True
        rr.state = self._closed_state

    def _record_round(self, rr: _RoundRun, out: RoundOutcome) -> dict[str, Any]:
        counts = out.counts()
        cov = out.coverage
        part: dict[str, dict[str, int]] = {}
        names = self.profile_names
        answered = AssignmentStatus.ANSWERED
        for a, st, n in zip(out.plan.assignments, out.statuses, out.attempt_counts):
            if n == 0:
                continue
            d = part.get(names[a.client_id])
            if d is None:
                d = part[names[a.client_id]] = {"asked": 0, "answered": 0}
            d["asked"] += 1
            if st is answered:
                d["answered"] += 1
        return {
            "round": rr.index,
            "t_start": out.t_start,
            "t_close": out.t_close,
            "duration_s": out.duration_s,
            "closed_by": out.closed_by,
            "groups": out.plan.num_groups,
            **counts,
            "crashed": rr.crashed,
            "offline": rr.offline,
            "evals": rr.evals,
            "wasted_device_s": rr.wasted_s,
            "bytes_sent": rr.bytes_sent,
            "bytes_received": rr.bytes_received,
            "coverage_mean": float(cov.mean()) if cov.size else 1.0,
            "coverage": [round(float(c), 4) for c in cov],
            "groups_with_signal": int(out.has_signal.sum()),
            "participation": part,
        }

    def _settle(self) -> None:
        """Counters that keep moving after a round closed (stragglers finishing later)."""
        for rr, rec in zip(self.runs, self.records):
            rec.update(
                crashed=rr.crashed,
                offline=rr.offline,
                late_arrivals=rr.late_arrivals,
                evals=rr.evals,
                busy_device_s=rr.busy_s,
                wasted_device_s=rr.wasted_s,
                bytes_sent=rr.bytes_sent,
                bytes_received=rr.bytes_received,
            )

    def run(self, rounds: int) -> SimResult:
        if not (isinstance(rounds, int) and rounds >= 0):
            raise ConfigError(f"rounds={rounds!r}; give an integer >= 0")
        t0 = time.perf_counter()
        self.env.process(self._round_loop(self.env, rounds))
        with self._gc_frozen():
            self.env.run()  # also lets stragglers finish so waste and bytes are settled
        for origin, _a, _values, compute in self.stale_buffer:  # arrived after the last update
            self.runs[origin].wasted_s += compute
        self.stale_buffer = []
        self._settle()
        wall = time.perf_counter() - t0
        return SimResult(
            self.config, self.seed, self.records, self.requests, wall, self.events, self.stale_used
        )


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
