"""The life of one simulated request, as the simulator's event-loop steps.

Each arrow is one event (a :class:`~fedgrpo.sim.events.Job` pushed on the loop)::

    send ──uplink (RTT/2 + bytes/down-bandwidth)──▶ arrive at device
        offline?  → the server notices after ``connect_timeout_s`` (failure; may retry)
        busy?     → wait in the device's FIFO queue (one request at a time: queueing is real)
    start ──compute (prefill + decode tokens / speed, lognormal jitter)──▶ done
        crash (per-request probability, at a uniform point) → the server sees a reset
        the device goes offline before done → silent: never answers
    done ──downlink (RTT/2 + bytes/up-bandwidth)──▶ result at the server → RoundState.on_result

Timing comes from :func:`fedgrpo.sim.devices.request_timing` (the model the emulation fault
proxy also uses). :class:`RequestSteps` is a mixin of :class:`fedgrpo.sim.engine.Simulator`:
the steps read and update the simulator's counters directly, which keeps the per-request
path free of indirections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedgrpo.edge.protocol import dumps, encode_request
from fedgrpo.rounds import (
    Assignment,
    AssignmentStatus,
    Disposition,
    RoundPlan,
    RoundPolicy,
    validate_values,
)
from fedgrpo.sim.config import ClientSpec, SimConfig
from fedgrpo.sim.devices import request_timing, request_timing_arrays, timing_arrays, transfer_s
from fedgrpo.sim.events import Device, Env, Job, RoundRun, make_devices
from fedgrpo.sim.rewards import CompetenceRewards, ModelRewards, RewardSource
from fedgrpo.sim.rng import (
    ClientStream,
    CounterGenerator,
    normals_at,
    round_keys,
    round_streams,
    uniform_at,
)
from fedgrpo.sim.vround import positions_by

__all__ = ["RequestSteps", "StaleEntry"]

# enum members as globals for the per-request paths (a global is ~15x cheaper to look up)
_ACCEPTED, _LATE, _RETRY = Disposition.ACCEPTED, Disposition.LATE, Disposition.RETRY

#: an async result kept for a later update: (origin round, assignment, values, compute s)
StaleEntry = tuple[int, Assignment, tuple[float, ...], float]


class RequestSteps:
    """Request life-cycle steps over the simulator's state (see the module docstring)."""

    # the simulator's state the steps use (set by Simulator.__init__ / _init_requests)
    config: SimConfig
    policy: RoundPolicy
    seed: int
    reward: RewardSource
    record_requests: bool
    env: Env
    events: int
    requests: list[dict[str, Any]]
    stale_buffer: list[StaleEntry]
    n: int
    profile_names: list[str]
    devices: list[Device]

    def _init_requests(self, clients: Sequence[ClientSpec]) -> None:
        """Devices, per-request byte constants and the bound step handlers."""
        w, cfg = self.config.workload, self.config
        self.n = len(clients)
        self.profile_names = [spec.device.name for spec in clients]
        self.devices = make_devices(clients, w, self.seed)
        self._est_bytes_per_cand = (
            int((w.question_tokens + w.completion_tokens) * w.chars_per_token) + 8
        )
        self._req_overhead = cfg.request_overhead_bytes
        self._resp_overhead = cfg.response_overhead_bytes
        self._resp_per_value = cfg.response_bytes_per_value
        self._cancel_queued = cfg.cancel_queued
        self._model_bytes = isinstance(self.reward, ModelRewards)
        self._timing_arrays = timing_arrays([d.timing for d in self.devices])
        self._first_round = -1
        self._first: list[tuple[float, float, float, float]] = []
        self._push = self.env.push
        # bound once: a bound method per scheduled step would be one more object per event
        self._h_arrive = self._arrive
        self._h_offline_fail = self._offline_fail
        self._h_crash = self._crash
        self._h_drop = self._drop
        self._h_done = self._done
        self._h_crash_fail = self._crash_fail
        self._h_deliver = self._deliver

    # ----------------------------------------------------------------- random streams

    def _open_streams(self, r: int, plan: RoundPlan) -> None:
        """Round ``r``'s reward streams for every client in its plan, prefilled with what the
        plan needs (1 uniform per candidate), and the draws and timing of every first send
        (request ``j`` of a client takes normals and uniforms ``2j, 2j+1`` of its ``request``
        stream), all in a few vectorised calls; retries open the request stream where the
        first sends left it (:meth:`_retry_stream`)."""
        asg = plan.assignments
        cl = np.fromiter((a.client_id for a in asg), dtype=np.int64, count=len(asg))
        k = np.fromiter((len(a.candidates) for a in asg), dtype=np.int64, count=len(asg))
        n_req = np.bincount(cl, minlength=1)
        clients = np.nonzero(n_req)[0]
        n_cand = np.bincount(cl, weights=k, minlength=1)[clients].astype(np.int64)
        self._set_streams(r, clients.tolist(), n_cand.tolist())
        draw = 2 * positions_by(cl)
        keys = round_keys(self.seed, r, cl, "request")
        z_rtt, z_speed = normals_at(keys, draw, draw + 1)
        t = self._timing_arrays
        half, compute = request_timing_arrays(
            t.rtt_mu[cl], t.rtt_sigma[cl], t.speed_sigma[cl], t.sec_fixed[cl],
            t.sec_per_unit[cl], k, z_rtt, z_speed,
        )  # fmt: skip
        self._first_round = r
        crash_u, crash_at = uniform_at(keys, draw).tolist(), uniform_at(keys, draw + 1).tolist()
        self._first = list(zip(half.tolist(), compute.tolist(), crash_u, crash_at))

    def _set_streams(self, r: int, clients: list[int], n_cand: list[int]) -> None:
        prefill = n_cand if isinstance(self.reward, CompetenceRewards) else [0] * len(clients)
        rew = round_streams(self.seed, r, clients, "reward", prefill)
        for c, s_rew in zip(clients, rew):
            dev = self.devices[c]
            dev.req, dev.reward, dev.stream_round, dev.sent = None, s_rew, r, 0

    def _retry_stream(self, r: int, cid: int, dev: Device) -> ClientStream:
        """Client ``cid``'s ``request`` stream of round ``r`` after its ``dev.sent`` sends."""
        key = int(round_keys(self.seed, r, np.array([cid]), "request")[0])
        dev.req = ClientStream(CounterGenerator(key, 2 * dev.sent, 2 * dev.sent))
        return dev.req

    # ----------------------------------------------------------------- request life

    def _timeout(self, delay: float, fn: Callable[[Job], None], job: Job) -> None:
        # Same priority and ordering as a simpy.Timeout (NORMAL = 1, FIFO by insertion).
        self.events += 1
        job.fn = fn
        self._push(job, delay)

    def _send(self, rr: RoundRun, a: Assignment, attempt: int) -> None:
        now = self.env._now  # env.now without the property call (also in the steps below)
        rr.state.on_sent(a, now)
        cid = a.client_id
        dev = self.devices[cid]
        if dev.stream_round != rr.index:  # a client added to the plan after it was built
            self._set_streams(rr.index, [cid], [len(a.candidates)])
        job = Job(rr, a, attempt, now, dev)
        job.rstream = dev.reward  # a straggler scores with its own round's stream
        rr.jobs[a.index] = job
        k = len(a.candidates)
        # fixed draws per request keep each client's stream aligned across scenarios
        if attempt == 1 and rr.index == self._first_round:  # drawn with the plan
            half, job.compute, job.crash_u, job.crash_at = self._first[a.index]
        else:
            s = dev.req or self._retry_stream(rr.index, cid, dev)
            z_rtt, z_speed = s.normals(2)
            job.crash_u, job.crash_at = s.uniforms(2)
            half, job.compute = request_timing(dev.timing, k, z_rtt, z_speed)
        dev.sent += 1
        job.half = half
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
        self._push(job, transfer_s(half, req_bytes, dev.timing.down_bps))

    def _request_bytes(self, rr: RoundRun, a: Assignment) -> int:
        if isinstance(self.reward, ModelRewards) and rr.inp.candidates is not None:
            return len(dumps(encode_request(self.reward.request(a, rr.inp))))
        return self.config.request_overhead_bytes + len(a.candidates) * self._est_bytes_per_cand

    def _arrive(self, job: Job) -> None:
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

    def _start(self, job: Job) -> None:
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

    def _next(self, dev: Device) -> None:
        dev.busy = False
        q = dev.queue
        if q:
            self._start(q.popleft())

    def _spent(self, job: Job, wasted: bool) -> float:
        spent = self.env.now - job.t_start
        job.rr.busy_s += spent
        if wasted:
            job.rr.wasted_s += spent
        return spent

    def _crash(self, job: Job) -> None:
        self._spent(job, wasted=True)
        job.rr.crashed += 1
        self._next(job.dev)
        if self.record_requests:
            self._record(job, "crashed")
        self._timeout(job.half, self._h_crash_fail, job)

    def _drop(self, job: Job) -> None:
        self._spent(job, wasted=True)
        job.rr.offline += 1
        if self.record_requests:
            self._record(job, "offline_mid_request")
        self._next(job.dev)

    def _done(self, job: Job) -> None:
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
        self._push(job, transfer_s(job.half, job.resp_bytes, dev.timing.up_bps))

    def _deliver(self, job: Job) -> None:
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

    def _offline_fail(self, job: Job) -> None:
        if self.record_requests:
            self._record(job, "offline")
        self._fail(job, "connect: device offline (connect timeout)")

    def _crash_fail(self, job: Job) -> None:
        self._fail(job, "connect: connection reset (device crashed)")

    def _fail(self, job: Job, reason: str) -> None:
        rr = job.rr
        if rr.finished:
            return
        if rr.state.on_failure(job.a.assignment_id, reason, self.env.now):
            self._retry(rr, job)
        self._after(rr)

    def _retry(self, rr: RoundRun, job: Job) -> None:
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

    def _after(self, rr: RoundRun) -> None:
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

    def _record(self, job: Job, what: str) -> None:
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
