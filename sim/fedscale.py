"""A fleet of FedScale devices: client ``k`` of a scenario takes the ``k``-th device of the files.

The one rule that turns FedScale's per-device numbers into a simulated client (used by
:func:`fedgrpo.sim.config.clients_from_fedscale` and by the scenario mapping):
``computation`` (ms/sample) scales compute speed relative to the file's median (a median
device runs at its profile's speed), ``communication`` (kbit/s) sets the bandwidth in both
directions, ``client_behave_trace`` intervals drive availability. Devices are the sorted ids
present in either file; a fleet larger than the files reuses them in turn (``k mod n``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np

from fedgrpo.errors import ConfigError
from fedgrpo.sim.availability import (
    FedScaleCapacity,
    TraceAvailability,
    load_fedscale_capacity,
    load_fedscale_trace,
)
from fedgrpo.sim.config import AvailabilitySpec

__all__ = ["SAMPLE", "FedScaleDevice", "FedScaleFleet", "sample_path"]

SAMPLE = "sample"  # the scenario value naming the shipped sample file
_SAMPLES = {
    "capacity": "client_device_capacity_sample",
    "behavior": "client_behave_trace_sample",
}


def sample_path(kind: str) -> Path:
    """The shipped sample (``sim/data``) of ``kind`` ``capacity`` or ``behavior``."""
    return Path(str(files("fedgrpo.sim") / "data" / _SAMPLES[kind]))


@dataclass(frozen=True)
class FedScaleDevice:
    """What one FedScale device sets on a simulated client (None = keep the profile's)."""

    device_id: int
    availability: AvailabilitySpec | None
    speed_factor: float
    bandwidth_mbps: float | None


class FedScaleFleet:
    """Devices from a capacity table and/or behaviour traces (either may be empty)."""

    def __init__(
        self, caps: dict[int, FedScaleCapacity], traces: dict[int, TraceAvailability]
    ) -> None:
        self.caps, self.traces = caps, traces
        self.ids = sorted(set(caps) | set(traces))
        if not self.ids:
            raise ConfigError("no devices in the FedScale files; give a capacity or trace file")
        comp = [c.computation_ms for c in caps.values()]
        self.median_ms = float(np.median(comp)) if comp else 1.0

    @classmethod
    def from_files(cls, capacity: str | Path | None, behavior: str | Path | None) -> FedScaleFleet:
        caps = load_fedscale_capacity(capacity) if capacity else {}
        return cls(caps, load_fedscale_trace(behavior) if behavior else {})

    def __len__(self) -> int:
        return len(self.ids)

    def device(self, k: int) -> FedScaleDevice:
        """Client ``k``'s device: the ``k mod n``-th id."""
        cid = self.ids[k % len(self.ids)]
        cap, tr = self.caps.get(cid), self.traces.get(cid)
        avail = None
        if tr is not None:
            avail = AvailabilitySpec("trace", intervals=tr.intervals, period_s=tr.period)
        return FedScaleDevice(
            device_id=cid,
            availability=avail,
            speed_factor=self.median_ms / cap.computation_ms if cap else 1.0,
            bandwidth_mbps=cap.communication_kbps / 1000.0 if cap else None,
        )
