"""Device profiles: how fast a device scores, how far it is, how often it fails.

Speeds are given for the *reference size class* ``1b`` (TinyLlama-1.1B, 8-bit quantised,
llama.cpp-style CPU inference) and scaled by model size: CPU inference of a small LM is
memory-bandwidth bound, so tokens/s scale roughly inversely with the parameter count
(:data:`SIZE_CLASSES`). A bigger client model is therefore slower — never a fixed time per
request.

Sources of the starting figures (approximate; every field can be overridden per scenario):

* Prefill TinyLlama-1.1B q8 ≈ 10 tok/s on a Raspberry Pi 4 and ≈ 35–45 tok/s on a Pi 5
  (issue #5; community llama.cpp benchmark threads). Decode ≈ ¼ of prefill on these CPUs.
  Pi Zero 2 W ≈ ⅕ of a Pi 4 (same cores family, ½ clock budget, 512 MB RAM); phones between a
  Pi 4 and a Pi 5; laptop and Jetson Orin Nano an order of magnitude faster (rough figures).
* Round-trip times: Wi-Fi 10–25 ms, 4G 25–50 ms (issue #5; Opensignal/Ookla reports); modelled
  as lognormal with the range as its 10th–90th percentile.
* 5G median ≈ 200 Mbit/s down / 20 up (Ookla Speedtest Global Index); 4G ≈ 30 / 10;
  home Wi-Fi ≈ 50–100 / 20–40.
* Production federated learning sees ≈ 6–10 % of selected devices drop out per round
  (Bonawitz et al., "Towards Federated Learning at Scale", MLSys 2019). The phone profiles'
  on/off availability (mean on / mean off) gives ≈ 8 % unavailability; crash probabilities are
  per request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from fedgrpo.errors import ConfigError

__all__ = [
    "PROFILES",
    "SIZE_CLASSES",
    "DeviceProfile",
    "DeviceTiming",
    "device_timing",
    "get_profile",
    "lognormal_from_range",
    "request_timing",
    "size_factor",
    "transfer_s",
]

#: parameter count (millions) of each client-model size class
SIZE_CLASSES: dict[str, float] = {
    "tiny": 10.0,  # the project's own tiny GPT-2/Llama experts
    "135m": 135.0,  # SmolLM2-135M
    "360m": 360.0,
    "1b": 1100.0,  # TinyLlama-1.1B: the reference class of the profile speeds
    "3b": 3000.0,
    "7b": 7000.0,
}
REFERENCE_CLASS = "1b"


def size_factor(size_class: str) -> float:
    """Speed multiplier of ``size_class`` relative to the 1.1B reference (10M → ×110)."""
    if size_class not in SIZE_CLASSES:
        raise ConfigError(
            f"model size class {size_class!r} is unknown; use one of {', '.join(SIZE_CLASSES)}"
        )
    return SIZE_CLASSES[REFERENCE_CLASS] / SIZE_CLASSES[size_class]


def lognormal_from_range(p10: float, p90: float) -> tuple[float, float]:
    """(median, sigma) of a lognormal whose 10th/90th percentiles are p10/p90."""
    if not 0 < p10 <= p90:
        raise ConfigError(f"lognormal range p10={p10}, p90={p90}; need 0 < p10 <= p90")
    z90 = 1.2815515655446004
    return math.sqrt(p10 * p90), math.log(p90 / p10) / (2 * z90)


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of device. Speeds are tokens/s for the 1.1B reference class."""

    name: str
    prefill_tok_s: float
    decode_tok_s: float
    rtt_median_s: float
    rtt_sigma: float
    down_mbps: float
    up_mbps: float
    crash_prob: float = 0.0
    mean_on_s: float | None = None  # None: always available
    mean_off_s: float | None = None
    overhead_s: float = 0.005  # per request: HTTP handling, tokenisation
    speed_sigma: float = 0.1  # lognormal jitter of compute time per request
    source: str = ""

    def __post_init__(self) -> None:
        for f in ("prefill_tok_s", "decode_tok_s", "rtt_median_s", "down_mbps", "up_mbps"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"profile {self.name!r}: {f}={v!r}; give a number > 0")
        for f in ("rtt_sigma", "overhead_s", "speed_sigma"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"profile {self.name!r}: {f}={v!r}; give a number >= 0")
        if not 0.0 <= self.crash_prob <= 1.0:
            raise ConfigError(
                f"profile {self.name!r}: crash_prob={self.crash_prob!r}; give a probability in [0, 1]"
            )
        if (self.mean_on_s is None) != (self.mean_off_s is None):
            raise ConfigError(
                f"profile {self.name!r}: give both mean_on_s and mean_off_s, or neither (always on)"
            )
        for f in ("mean_on_s", "mean_off_s"):
            v = getattr(self, f)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"profile {self.name!r}: {f}={v!r}; give seconds > 0 or None")

    @property
    def unavailability(self) -> float:
        """Long-run fraction of time offline."""
        if self.mean_on_s is None or self.mean_off_s is None:
            return 0.0
        return self.mean_off_s / (self.mean_on_s + self.mean_off_s)

    def with_overrides(self, overrides: Mapping[str, Any]) -> DeviceProfile:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"profile {self.name!r}: unknown field(s) {unknown}; allowed: {sorted(known)}"
            )
        return replace(self, **dict(overrides))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _p(name: str, prefill: float, decode: float, rtt: tuple[float, float], down: float, up: float,
       crash: float, on_off: tuple[float, float] | None, source: str) -> DeviceProfile:  # fmt: skip
    median, sigma = lognormal_from_range(*rtt)
    return DeviceProfile(
        name, prefill, decode, median, sigma, down, up, crash,
        on_off[0] if on_off else None, on_off[1] if on_off else None, source=source,
    )  # fmt: skip


#: the shipped library (see the module docstring for sources)
PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        _p("rpi-zero2", 2.0, 0.5, (0.010, 0.030), 20, 10, 0.02, (3600, 300), "≈⅕ of a Pi 4 (estimate)"),
        _p("rpi4", 10.0, 2.5, (0.010, 0.025), 80, 40, 0.005, (7200, 120), "issue #5: TinyLlama q8 prefill ~10 tok/s"),
        _p("rpi5", 40.0, 8.0, (0.010, 0.025), 80, 40, 0.005, (7200, 120), "issue #5: TinyLlama q8 prefill ~35-45 tok/s"),
        _p("phone-4g", 25.0, 6.0, (0.025, 0.050), 30, 10, 0.01, (1200, 100), "4G RTT 25-50 ms; FL dropout 6-10%"),
        _p("phone-5g", 25.0, 6.0, (0.015, 0.035), 200, 20, 0.01, (1200, 100), "5G ~200/20 Mbit/s (Ookla)"),
        _p("phone-wifi", 25.0, 6.0, (0.010, 0.025), 60, 20, 0.01, (1800, 120), "Wi-Fi RTT 10-25 ms"),
        _p("laptop", 150.0, 20.0, (0.008, 0.020), 100, 40, 0.001, (14400, 600), "rough figure"),
        _p("jetson", 300.0, 25.0, (0.005, 0.015), 100, 50, 0.001, None, "Orin Nano, rough figure"),
    )
}  # fmt: skip


def get_profile(profile: str | DeviceProfile, **overrides: Any) -> DeviceProfile:
    """A library profile by name (or a given one), with field overrides."""
    if isinstance(profile, DeviceProfile):
        base = profile
    elif profile in PROFILES:
        base = PROFILES[profile]
    else:
        raise ConfigError(
            f"device profile {profile!r} is unknown; use one of {', '.join(PROFILES)} "
            "or pass a DeviceProfile"
        )
    return base.with_overrides(overrides) if overrides else base


# --------------------------------------------------------------------------- request timing
# The one timing model of a scoring request, shared by the simulator (virtual time) and the
# emulation fault proxy (wall-clock time): RTT lognormal, compute = (overhead + decode +
# prefill per input unit) × lognormal speed jitter, transfers = RTT/2 + bytes / bandwidth.


@dataclass(frozen=True, slots=True)
class DeviceTiming:
    """One device's request-timing constants, computed once from its profile and speed."""

    rtt_mu: float  # log of the median RTT (s)
    rtt_sigma: float
    speed_sigma: float  # lognormal jitter of the compute time per request
    sec_fixed: float  # per request: overhead + decode
    sec_per_unit: float  # prefill time per unit of input (a candidate or a token)
    down_bps: float  # bytes/s towards the device
    up_bps: float  # bytes/s from the device


_TIMING = ("rtt_mu", "rtt_sigma", "speed_sigma", "sec_fixed", "sec_per_unit", "down_bps", "up_bps")


def device_timing(
    profile: DeviceProfile,
    speed: float,
    decode_tokens: float,
    tokens_per_unit: float = 1.0,
    bandwidth_mbps: float | None = None,
) -> DeviceTiming:
    """Timing constants of ``profile`` at ``speed`` (size factor × speed factor).

    ``tokens_per_unit``: prefill tokens per unit that :func:`request_timing` is given (the
    tokens of one candidate, or 1 to count tokens). ``bandwidth_mbps`` overrides both of the
    profile's link speeds."""
    down = bandwidth_mbps or profile.down_mbps
    up = bandwidth_mbps or profile.up_mbps
    return DeviceTiming(
        rtt_mu=math.log(profile.rtt_median_s),
        rtt_sigma=profile.rtt_sigma,
        speed_sigma=profile.speed_sigma,
        sec_fixed=profile.overhead_s + decode_tokens / (profile.decode_tok_s * speed),
        sec_per_unit=tokens_per_unit / (profile.prefill_tok_s * speed),
        down_bps=down * 1e6 / 8,
        up_bps=up * 1e6 / 8,
    )


def request_timing(
    timing: DeviceTiming, units: float, z_rtt: float, z_speed: float
) -> tuple[float, float]:
    """(RTT/2, compute seconds) of one request of ``units`` input units, from two standard
    normal draws (``z_rtt`` for the round trip, ``z_speed`` for the compute jitter)."""
    rtt = math.exp(timing.rtt_mu + timing.rtt_sigma * z_rtt)
    jitter = math.exp(timing.speed_sigma * z_speed)
    return rtt / 2, (timing.sec_fixed + units * timing.sec_per_unit) * jitter


@dataclass(frozen=True)
class TimingArrays:
    """:class:`DeviceTiming` of many devices, one array per field."""

    rtt_mu: np.ndarray
    rtt_sigma: np.ndarray
    speed_sigma: np.ndarray
    sec_fixed: np.ndarray
    sec_per_unit: np.ndarray
    down_bps: np.ndarray
    up_bps: np.ndarray


def timing_arrays(timings: Sequence[DeviceTiming]) -> TimingArrays:
    """Per-device timing constants as arrays (devices sharing a :class:`DeviceTiming` object
    read it once)."""
    slot: dict[int, int] = {}
    table: list[DeviceTiming] = []
    idx = np.empty(len(timings), dtype=np.int64)
    for i, t in enumerate(timings):
        j = slot.get(id(t))
        if j is None:
            j = slot[id(t)] = len(table)
            table.append(t)
        idx[i] = j
    return timing_columns(table, idx)


def timing_columns(table: Sequence[DeviceTiming], idx: np.ndarray) -> TimingArrays:
    """Device ``i`` gets ``table[idx[i]]``'s constants: each distinct timing read once, then
    gathered per device (what both engines hold for a fleet)."""
    cols = [np.array([getattr(t, f) for t in table], dtype=np.float64)[idx] for f in _TIMING]
    return TimingArrays(*cols)


def request_timing_arrays(
    rtt_mu: np.ndarray, rtt_sigma: np.ndarray, speed_sigma: np.ndarray, sec_fixed: np.ndarray,
    sec_per_unit: np.ndarray, units: np.ndarray, z_rtt: np.ndarray, z_speed: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`request_timing` over arrays of requests (each :class:`DeviceTiming` field given
    per request): the same formula, elementwise (the vectorised simulator)."""
    rtt = np.exp(rtt_mu + rtt_sigma * z_rtt)
    jitter = np.exp(speed_sigma * z_speed)
    return rtt / 2, (sec_fixed + units * sec_per_unit) * jitter


def transfer_s(half_rtt: Any, nbytes: Any, bytes_per_s: Any) -> Any:
    """One-way time of a message: half the round trip plus its bytes over the link (floats, or
    numpy arrays elementwise)."""
    return half_rtt + nbytes / bytes_per_s
