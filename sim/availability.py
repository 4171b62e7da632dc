"""When a device is reachable: always, an on/off Markov chain, or a trace (FedScale formats).

Availability is evaluated lazily: the chain is extended only as far as the simulation asks,
from the client's own random stream, so it costs no simulation events and 10k clients are
free when idle. ``online_until(t)`` answers "is it online at t, and until when?".

FedScale trace formats (https://github.com/SymbioticLab/FedScale, ``benchmark/dataset``
``device_info``; pickled dicts keyed by client id):

* ``client_device_capacity``: ``{client_id: {"computation": ms per sample, "communication":
  bandwidth in kbit/s}}``.
* ``client_behave_trace``: ``{client_id: {"duration": s, "active": [s, ...], "inactive":
  [s, ...], "finish_time": s, "model": str}}`` — online during each ``[active[i], inactive[i]]``,
  periodic with period ``finish_time`` (as FedScale's ``is_active`` does).

Both load from pickle (restricted to plain containers and numbers) or JSON with the same shape.
"""

from __future__ import annotations

import bisect
import io
import json
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedgrpo.errors import ConfigError
from fedgrpo.sim.rng import ClientStream

__all__ = [
    "AlwaysOn",
    "Availability",
    "FedScaleCapacity",
    "MarkovAvailability",
    "TraceAvailability",
    "load_fedscale_capacity",
    "load_fedscale_trace",
]

INF = math.inf


class Availability(Protocol):
    def online_until(self, t: float) -> float | None:
        """None if offline at ``t``; else the time it next goes offline (inf = never)."""
        ...


class AlwaysOn:
    def online_until(self, t: float) -> float | None:
        return INF


class MarkovAvailability:
    """Two-state continuous-time Markov chain: exponential on and off holding times.

    Starts in the stationary distribution, so the unavailability at any time is
    ``mean_off / (mean_on + mean_off)``."""

    __slots__ = ("_changes", "_mean_off", "_mean_on", "_online0", "_stream")

    def __init__(self, mean_on_s: float, mean_off_s: float, stream: ClientStream) -> None:
        if not (mean_on_s > 0 and mean_off_s > 0):
            raise ConfigError(
                f"availability mean_on_s={mean_on_s}, mean_off_s={mean_off_s}; both must be > 0"
            )
        self._mean_on, self._mean_off, self._stream = mean_on_s, mean_off_s, stream
        self._online0 = stream.uniform() < mean_on_s / (mean_on_s + mean_off_s)
        first = stream.exponential(mean_on_s if self._online0 else mean_off_s)
        self._changes: list[float] = [first]  # state flips at each of these times

    def _extend(self, t: float) -> None:
        ch = self._changes
        while ch[-1] <= t:
            online_now = self._online0 ^ (len(ch) % 2 == 1)  # state after len(ch) flips
            ch.append(
                ch[-1] + self._stream.exponential(self._mean_on if online_now else self._mean_off)
            )

    def flips_until(self, t: float) -> tuple[bool, list[float]]:
        """(online at time 0, the flip times so far, the last one after ``t``): the chain as
        data, for the vectorised simulator's availability table."""
        self._extend(t)
        return self._online0, list(self._changes)

    def online_until(self, t: float) -> float | None:
        self._extend(t)
        k = bisect.bisect_right(self._changes, t)  # flips at or before t
        online = self._online0 ^ (k % 2 == 1)
        return self._changes[k] if online else None


class TraceAvailability:
    """Online during the given ``[start, end]`` intervals, repeated every ``period`` seconds
    (``period=None``: not repeated; offline after the last interval)."""

    __slots__ = ("_ends", "_period", "_starts")

    def __init__(
        self, intervals: Sequence[tuple[float, float]], period: float | None = None
    ) -> None:
        iv = sorted((float(a), float(b)) for a, b in intervals)
        for a, b in iv:
            if not (math.isfinite(a) and math.isfinite(b) and a <= b):
                raise ConfigError(f"availability interval ({a}, {b}) is invalid; need start <= end")
        merged: list[list[float]] = []
        for a, b in iv:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        if period is not None:
            if not period > 0:
                raise ConfigError(f"trace period={period}; give seconds > 0 or None")
            if merged and (merged[0][0] < 0 or merged[-1][1] > period):
                raise ConfigError(
                    f"trace intervals span [{merged[0][0]}, {merged[-1][1]}] beyond the period "
                    f"[0, {period}]; fix finish_time or the intervals"
                )
        self._starts = [a for a, _ in merged]
        self._ends = [b for _, b in merged]
        self._period = period

    def _local(self, t: float) -> float | None:
        k = bisect.bisect_right(self._starts, t) - 1
        if k >= 0 and t <= self._ends[k]:
            return self._ends[k]
        return None

    def online_until(self, t: float) -> float | None:
        if self._period is None:
            return self._local(t)
        base = math.floor(t / self._period) * self._period
        end = self._local(t - base)
        if end is None:
            return None
        until = base + end
        # an interval ending at the period boundary continues if the next period starts online
        if end >= self._period and self._starts and self._starts[0] <= 0.0:
            until = base + self._period + self._ends[0]
        return until

    @property
    def intervals(self) -> tuple[tuple[float, float], ...]:
        """The merged ``(start, end)`` intervals within one period."""
        return tuple(zip(self._starts, self._ends))

    @property
    def period(self) -> float | None:
        return self._period

    def fraction_online(self) -> float:
        if self._period is None:
            return float("nan")
        return sum(b - a for a, b in zip(self._starts, self._ends)) / self._period


# --------------------------------------------------------------------------- FedScale files


class _SafeUnpickler(pickle.Unpickler):
    """Only plain data: FedScale traces are dicts of lists of numbers (and numpy scalars)."""

    _ALLOWED = frozenset(
        {
            ("builtins", "dict"),
            ("builtins", "list"),
            ("builtins", "tuple"),
            ("builtins", "float"),
            ("builtins", "int"),
            ("collections", "OrderedDict"),
            ("collections", "defaultdict"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise ConfigError(
            f"trace file refers to {module}.{name}; only plain dicts/lists/numbers are loaded "
            "(convert it to JSON with the same shape)"
        )


def _load(path: str | Path) -> dict[int, Any]:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"trace file {str(p)!r} does not exist")
    raw = p.read_bytes()
    try:
        if p.suffix == ".json" or raw[:1] in (b"{", b"["):
            data = json.loads(raw.decode("utf-8"))
        else:
            data = _SafeUnpickler(io.BytesIO(raw)).load()
    except (ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise ConfigError(f"trace file {str(p)!r} is neither JSON nor a pickle: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"trace file {str(p)!r} must hold a dict keyed by client id")
    try:
        return {int(k): v for k, v in data.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"trace file {str(p)!r}: client ids must be integers") from exc


@dataclass(frozen=True)
class FedScaleCapacity:
    computation_ms: float  # ms per sample (FedScale's inference latency)
    communication_kbps: float


def load_fedscale_capacity(path: str | Path) -> dict[int, FedScaleCapacity]:
    """``client_device_capacity`` → {client id: capacity}."""
    out: dict[int, FedScaleCapacity] = {}
    for cid, v in _load(path).items():
        try:
            comp, comm = float(v["computation"]), float(v["communication"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: client {cid} needs numeric 'computation' and 'communication', got {v!r}"
            ) from exc
        if not (comp > 0 and comm > 0):
            raise ConfigError(
                f"{path}: client {cid} has computation={comp}, communication={comm}; need > 0"
            )
        out[cid] = FedScaleCapacity(comp, comm)
    return out


def load_fedscale_trace(path: str | Path) -> dict[int, TraceAvailability]:
    """``client_behave_trace`` → {client id: availability}."""
    out: dict[int, TraceAvailability] = {}
    for cid, v in _load(path).items():
        try:
            active = [float(x) for x in v["active"]]
            inactive = [float(x) for x in v["inactive"]]
            finish = float(v["finish_time"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: client {cid} needs 'active', 'inactive' lists and 'finish_time'"
            ) from exc
        if len(active) != len(inactive):
            raise ConfigError(
                f"{path}: client {cid} has {len(active)} active but {len(inactive)} inactive times"
            )
        out[cid] = TraceAvailability(list(zip(active, inactive)), period=finish)
    return out
