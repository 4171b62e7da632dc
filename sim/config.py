"""Plain, validated dataclasses describing a simulation (a YAML scenario maps onto these)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedgrpo.errors import ConfigError
from fedgrpo.rounds import RoundPolicy
from fedgrpo.sim.availability import (
    AlwaysOn,
    Availability,
    MarkovAvailability,
    TraceAvailability,
)
from fedgrpo.sim.devices import DeviceProfile, get_profile, size_factor
from fedgrpo.sim.rng import ClientStream, stream_generator

__all__ = ["AvailabilitySpec", "ClientSpec", "SimConfig", "WorkloadSpec", "clients_from_fedscale"]

AVAILABILITY_KINDS = ("profile", "always", "markov", "trace")
DISPATCH_MODES = ("split", "broadcast")
SELECTORS = ("random", "top")
MODES = ("sync", "async")


@dataclass(frozen=True)
class AvailabilitySpec:
    """``profile``: the profile's on/off chain; ``always``; ``markov`` with the given means;
    ``trace``: online during ``intervals`` repeated every ``period_s``."""

    kind: str = "profile"
    mean_on_s: float | None = None
    mean_off_s: float | None = None
    intervals: tuple[tuple[float, float], ...] = ()
    period_s: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in AVAILABILITY_KINDS:
            raise ConfigError(
                f"availability kind {self.kind!r} is unknown; use one of {', '.join(AVAILABILITY_KINDS)}"
            )
        if self.kind == "markov" and not (
            self.mean_on_s is not None
            and self.mean_off_s is not None
            and self.mean_on_s > 0
            and self.mean_off_s > 0
        ):
            raise ConfigError(
                f"availability 'markov' needs mean_on_s > 0 and mean_off_s > 0; got "
                f"{self.mean_on_s}, {self.mean_off_s}"
            )
        if self.kind == "trace":
            TraceAvailability(self.intervals, self.period_s)  # validates

    def build(self, profile: DeviceProfile, seed: int, client_id: int) -> Availability:
        """The client's on/off process, drawing from its own ``availability`` stream (the
        simulator and the emulate fault proxies build it the same way, so they agree)."""
        if self.kind == "always" or (self.kind == "profile" and profile.mean_on_s is None):
            return AlwaysOn()
        stream = ClientStream(stream_generator(seed, client_id, "availability"), block=16)
        if self.kind == "profile":
            assert profile.mean_on_s is not None and profile.mean_off_s is not None
            return MarkovAvailability(profile.mean_on_s, profile.mean_off_s, stream)
        if self.kind == "markov":
            assert self.mean_on_s is not None and self.mean_off_s is not None
            return MarkovAvailability(self.mean_on_s, self.mean_off_s, stream)
        return TraceAvailability(self.intervals, self.period_s)


@dataclass(frozen=True)
class ClientSpec:
    """One simulated client. ``competence``: probability the client judges a candidate
    correctly (per domain, or one number for all) — used by the timing-only reward surrogate.
    ``speed_factor`` multiplies compute speed (e.g. from a FedScale capacity trace)."""

    profile: str | DeviceProfile = "phone-wifi"
    size_class: str = "135m"
    competence: float | Mapping[str, float] = 0.8
    availability: AvailabilitySpec = field(default_factory=AvailabilitySpec)
    speed_factor: float = 1.0
    bandwidth_mbps: float | None = None  # overrides both directions (FedScale 'communication')

    def __post_init__(self) -> None:
        get_profile(self.profile)  # validates the name
        size_factor(self.size_class)
        comps = (
            self.competence.values() if isinstance(self.competence, Mapping) else [self.competence]
        )
        for c in comps:
            if not 0.0 <= c <= 1.0:
                raise ConfigError(f"client competence {c!r} must be a probability in [0, 1]")
        if not (math.isfinite(self.speed_factor) and self.speed_factor > 0):
            raise ConfigError(f"speed_factor={self.speed_factor!r}; give a number > 0")
        if self.bandwidth_mbps is not None and not self.bandwidth_mbps > 0:
            raise ConfigError(f"bandwidth_mbps={self.bandwidth_mbps!r}; give Mbit/s > 0 or None")

    @property
    def device(self) -> DeviceProfile:
        return get_profile(self.profile)

    @property
    def profile_name(self) -> str:
        return self.device.name

    def competence_on(self, domain: str) -> float:
        if isinstance(self.competence, Mapping):
            return float(self.competence.get(domain, 0.5))
        return float(self.competence)


@dataclass(frozen=True)
class WorkloadSpec:
    """What a round asks: B questions × G candidates, M experts each, token/byte sizes."""

    domains: tuple[str, ...] = ("add", "sub", "mul")
    questions_per_round: int = 8
    group_size: int = 8
    experts_per_question: int = 2
    dispatch: str = "split"
    selector: str = "random"
    question_tokens: int = 16
    completion_tokens: int = 48
    decode_tokens: int = 0  # per request: 0 for likelihood scoring, ~answer length for agreement
    chars_per_token: float = 4.0
    policy_accuracy: float = 0.5  # latent P(candidate correct) for the timing-only surrogate
    reward_mode: str = "auto"

    def __post_init__(self) -> None:
        if not self.domains:
            raise ConfigError("workload.domains must name at least one domain")
        for name in ("questions_per_round", "group_size", "experts_per_question"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ConfigError(f"workload.{name}={v!r}; give an integer >= 1")
        for name in ("question_tokens", "completion_tokens", "decode_tokens"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 0):
                raise ConfigError(f"workload.{name}={v!r}; give an integer >= 0")
        if self.dispatch not in DISPATCH_MODES:
            raise ConfigError(f"workload.dispatch={self.dispatch!r}; use one of {DISPATCH_MODES}")
        if self.selector not in SELECTORS:
            raise ConfigError(f"workload.selector={self.selector!r}; use one of {SELECTORS}")
        if not 0.0 <= self.policy_accuracy <= 1.0:
            raise ConfigError(f"workload.policy_accuracy={self.policy_accuracy}; give [0, 1]")
        if not self.chars_per_token > 0:
            raise ConfigError(f"workload.chars_per_token={self.chars_per_token}; give > 0")


@dataclass(frozen=True)
class SimConfig:
    """A whole simulated deployment.

    * ``mode``: ``sync`` (stragglers are cut at the close) or ``async`` (FedBuff-style: results
      arriving after their round are used in a later update if at most ``max_staleness`` rounds
      old, else dropped).
    * ``connect_timeout_s``: how long the server takes to notice an offline device (failed
      connect) — then the round policy may retry.
    * ``update_s``: server time between rounds (rollout + update), virtual.
    * ``cancel_queued``: a cancelled request still waiting in a device's queue is dropped
      (the server closed the connection). Running work always runs to completion (an ONNX
      forward pass cannot be interrupted) and counts as wasted if its result is not used.
    """

    clients: tuple[ClientSpec, ...]
    policy: RoundPolicy = field(default_factory=RoundPolicy)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    mode: str = "sync"
    max_staleness: int = 1
    connect_timeout_s: float = 5.0
    update_s: float = 0.0
    cancel_queued: bool = True
    request_overhead_bytes: int = 260
    response_overhead_bytes: int = 110
    response_bytes_per_value: int = 6

    def __post_init__(self) -> None:
        if not self.clients:
            raise ConfigError("SimConfig.clients is empty; give at least one ClientSpec")
        if self.mode not in MODES:
            raise ConfigError(f"SimConfig.mode={self.mode!r}; use one of {MODES}")
        if not (isinstance(self.max_staleness, int) and self.max_staleness >= 0):
            raise ConfigError(
                f"SimConfig.max_staleness={self.max_staleness!r}; give an integer >= 0"
            )
        for name in ("connect_timeout_s", "update_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"SimConfig.{name}={v!r}; give seconds >= 0")
        n_ask = self.workload.experts_per_question + self.policy.over_selection
        if n_ask > len(self.clients):
            raise ConfigError(
                f"each question asks {n_ask} experts (M={self.workload.experts_per_question}, "
                f"over_selection={self.policy.over_selection}) but only {len(self.clients)} "
                "clients exist; add clients or lower M / over_selection"
            )

    @classmethod
    def mixed(
        cls,
        num_clients: int,
        profiles: Mapping[str, float] | Sequence[str] | str = "phone-wifi",
        size_class: str = "135m",
        competence: float | Mapping[str, float] = 0.8,
        seed: int = 0,
        **kwargs: object,
    ) -> SimConfig:
        """``num_clients`` clients whose profiles follow the given mix (name → weight); the
        assignment of profiles to client ids is a seeded shuffle of exact proportions."""
        if num_clients < 1:
            raise ConfigError(f"num_clients={num_clients}; give >= 1")
        if isinstance(profiles, str):
            mix = {profiles: 1.0}
        elif isinstance(profiles, Mapping):
            mix = {str(k): float(v) for k, v in profiles.items()}
        else:
            mix = {p: 1.0 for p in profiles}
        total = sum(mix.values())
        if not total > 0 or any(v < 0 for v in mix.values()):
            raise ConfigError(f"profile mix {mix} needs non-negative weights summing > 0")
        names = list(mix)
        counts = [math.floor(num_clients * mix[n] / total) for n in names]
        for i in range(num_clients - sum(counts)):
            counts[i % len(names)] += 1
        labels = [n for n, c in zip(names, counts) for _ in range(c)]
        order = np.random.default_rng(seed).permutation(num_clients)
        specs = tuple(
            ClientSpec(profile=labels[int(i)], size_class=size_class, competence=competence)
            for i in order
        )
        return cls(clients=specs, **kwargs)  # type: ignore[arg-type]


def clients_from_fedscale(
    capacity_path: str | Path | None,
    trace_path: str | Path | None,
    profile: str | DeviceProfile = "phone-wifi",
    size_class: str = "135m",
    competence: float | Mapping[str, float] = 0.8,
    num_clients: int | None = None,
) -> tuple[ClientSpec, ...]:
    """Clients from FedScale device files: ``computation`` (ms/sample) scales compute speed
    relative to the file's median (a median device runs at the profile's speed), ``communication``
    (kbit/s) sets the bandwidth, ``client_behave_trace`` intervals drive availability. Client
    ids are the sorted ids present in the files (the first ``num_clients``)."""
    from fedgrpo.sim.fedscale import FedScaleFleet  # imports this module

    fleet = FedScaleFleet.from_files(capacity_path, trace_path)
    n = len(fleet) if num_clients is None else min(num_clients, len(fleet))
    out = []
    for k in range(n):
        dev = fleet.device(k)
        out.append(
            ClientSpec(
                profile=profile,
                size_class=size_class,
                competence=competence,
                availability=dev.availability or AvailabilitySpec("profile"),
                speed_factor=dev.speed_factor,
                bandwidth_mbps=dev.bandwidth_mbps,
            )
        )
    return tuple(out)
