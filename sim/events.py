"""The simulator's event-loop internals: a request attempt (:class:`Job`), a client device's
state (:class:`Device`), a round in flight (:class:`RoundRun`) and simpy's environment with a
fast path for request steps (:class:`Env`). Not part of the public API."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.events import NORMAL

from fedgrpo.rounds import Assignment, RoundState
from fedgrpo.sim.availability import Availability
from fedgrpo.sim.config import ClientSpec, WorkloadSpec
from fedgrpo.sim.devices import DeviceProfile, DeviceTiming, device_timing, size_factor
from fedgrpo.sim.rewards import RoundInput
from fedgrpo.sim.rng import ClientStream

__all__ = ["Device", "Env", "Job", "RoundRun", "make_devices"]


class Job:
    """One attempt of one assignment. It is also its own event in the simpy queue: a request
    has at most one pending step at a time, so each step sets ``fn`` and pushes the job with
    :meth:`Env.push` (same priority and ordering as a ``simpy.Timeout``, without an event
    object per step); :meth:`Env.step` calls ``fn(job)`` when it pops it."""

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
    # set when the step that needs them runs (send, arrive, timeout)
    fn: Callable[[Job], None]
    half: float
    compute: float
    crash_u: float
    crash_at: float
    req_bytes: int
    resp_bytes: int
    online_until: float
    rstream: ClientStream | None

    def __init__(
        self, rr: RoundRun, a: Assignment, attempt: int, t_sent: float, dev: Device
    ) -> None:
        self.rr, self.a, self.attempt, self.cid, self.dev = rr, a, attempt, a.client_id, dev
        self.cancelled = False
        self.t_start = -1.0
        self.t_sent = t_sent
        self.values: list[float] = []


class Device:
    """One client's constants and state in one object: a step does one lookup, and what it
    touches sits together in memory (10k clients' tables do not fit in the CPU caches)."""

    __slots__ = (
        "avail", "busy", "crash_p", "queue", "req", "reward", "sent", "stream_round", "timing",
    )  # fmt: skip

    def __init__(self, avail: Availability, timing: DeviceTiming, crash_p: float) -> None:
        self.avail = avail
        self.timing = timing  # request timing constants (sim.devices.request_timing)
        self.crash_p = crash_p
        self.busy = False
        self.queue: deque[Job] = deque()
        # this round's random streams (set at the start of each round the client is asked in)
        self.req: ClientStream | None = None
        self.reward: ClientStream | None = None
        self.stream_round = -1
        self.sent = 0  # requests sent this round (the next one's draws follow theirs)


def make_devices(clients: Sequence[ClientSpec], workload: WorkloadSpec, seed: int) -> list[Device]:
    """Every client's device: availability, timing per candidate of ``workload``, crashes.
    Clients with the same profile, speed and bandwidth share one (immutable) timing."""
    timings: dict[tuple[DeviceProfile, float, float | None], DeviceTiming] = {}
    tokens_per_cand = workload.question_tokens + workload.completion_tokens
    devices = []
    for cid, spec in enumerate(clients):
        p = spec.device
        key = (p, size_factor(spec.size_class) * spec.speed_factor, spec.bandwidth_mbps)
        timing = timings.get(key)
        if timing is None:
            timing = timings[key] = device_timing(
                p, key[1], workload.decode_tokens, tokens_per_cand, spec.bandwidth_mbps
            )
        devices.append(Device(spec.availability.build(p, seed, cid), timing, p.crash_prob))
    return devices


class Env(simpy.Environment):
    """simpy's environment with a fast path for request steps.

    Jobs share simpy's queue and ordering key ``(time, priority, id)``, so they interleave with
    round timeouts and processes exactly as ``simpy.Timeout`` events would; but popping a job
    calls its step directly instead of going through ``Event.callbacks`` (a job never fails
    and has one consumer). Consecutive jobs are handled in one ``step`` call."""

    def push(self, job: Job, delay: float) -> None:
        """Schedule ``job.fn(job)`` in ``delay`` seconds (``NORMAL`` priority, FIFO on ties)."""
        # a job stands in for an Event in simpy's queue (typed as Event entries)
        entry: Any = (self._now + delay, NORMAL, next(self._eid), job)
        heappush(self._queue, entry)

    def step(self) -> None:
        """Run the jobs due first, then one simpy event."""
        queue = self._queue
        while queue:
            top = queue[0]
            job = top[3]
            if type(job) is not Job:
                break
            heappop(queue)
            self._now = top[0]
            job.fn(job)
        super().step()  # a simpy event (or EmptySchedule when the queue is empty)


@dataclass(eq=False)
class RoundRun:
    """One round in flight: its state, input, close event, latest jobs and counters."""

    index: int
    state: RoundState
    inp: RoundInput
    close_ev: simpy.Event
    jobs: list[Job | None] = field(default_factory=list)  # latest attempt per plan index
    crashed: int = 0
    offline: int = 0
    busy_s: float = 0.0
    wasted_s: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    evals: int = 0
    late_arrivals: int = 0
    finished: bool = False
