"""``sim.fedscale``: FedScale device and availability traces from a scenario file.

``capacity`` is a FedScale ``client_device_capacity`` file (compute ms/sample, bandwidth
kbit/s per device), ``behavior`` a ``client_behave_trace`` (when each device is online); each
is a path (pickle as FedScale ships it, or JSON of the same shape) or ``sample`` for the tiny
files shipped in ``fedgrpo/sim/data``. Client ``k`` of the scenario takes the ``k``-th device
(sorted ids, reused in turn when the fleet is larger). They set the simulated device of every
client in modes sim and emulate (:func:`fedgrpo.scenarios.mapping.sim_client`); the group's
profile still gives latency and failure rates. Files are read when the scenario is validated
(once per file content), so a missing or malformed file is reported with its field path.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from fedgrpo.errors import ConfigError
from fedgrpo.scenarios.fields import err

if TYPE_CHECKING:
    from fedgrpo.scenarios.schema import Scenario
    from fedgrpo.sim.fedscale import FedScaleDevice, FedScaleFleet

SAMPLE = "sample"
KINDS = ("capacity", "behavior")


@functools.lru_cache(maxsize=8)
def _table(kind: str, path: str, mtime_ns: int, size: int) -> dict[int, Any]:
    """One file's devices, re-read only when the file changes (FedScale's are large)."""
    from fedgrpo.sim.availability import load_fedscale_capacity, load_fedscale_trace

    load = load_fedscale_capacity if kind == "capacity" else load_fedscale_trace
    return dict(load(path))


class FedScaleSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    # client_device_capacity: a path or 'sample'
    capacity: str | None = None
    # client_behave_trace: a path or 'sample'
    behavior: str | None = None

    @field_validator("capacity", "behavior")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        """A path is made absolute, so the run directory's scenario.yaml still finds it."""
        if value is None or value == SAMPLE:
            return value
        path = Path(value).expanduser()
        if not path.is_file():
            raise err(
                "fedscale",
                "FedScale file '{value}' does not exist; give the path of a FedScale "
                "device_info file (pickle or JSON) or 'sample' for the shipped sample",
                value=value,
            )
        return str(path.resolve())

    @model_validator(mode="after")
    def _some_file(self) -> FedScaleSection:
        if self.capacity is None and self.behavior is None:
            raise err("fedscale", "give capacity and/or behavior (a file path or 'sample')")
        return self

    def _key(self, kind: str) -> tuple[str, str, int, int] | None:
        from fedgrpo.sim.fedscale import sample_path

        value = getattr(self, kind)
        if value is None:
            return None
        path = sample_path(kind) if value == SAMPLE else Path(value)
        st = path.stat()
        return kind, str(path), st.st_mtime_ns, st.st_size

    def table(self, kind: str) -> dict[int, Any]:
        """The devices of file ``kind`` (``capacity`` or ``behavior``); {} if not given."""
        key = self._key(kind)
        return {} if key is None else _table(*key)

    def device(self, k: int) -> FedScaleDevice:
        """Client ``k``'s FedScale device."""
        return _fleet(self._key("capacity"), self._key("behavior")).device(k)


@functools.lru_cache(maxsize=4)
def _fleet(
    capacity: tuple[str, str, int, int] | None, behavior: tuple[str, str, int, int] | None
) -> FedScaleFleet:
    from fedgrpo.sim.fedscale import FedScaleFleet

    caps = _table(*capacity) if capacity else {}
    return FedScaleFleet(caps, _table(*behavior) if behavior else {})


def check_fedscale(s: Scenario) -> list[tuple[str, str]]:
    """Cross-field problems of ``sim.fedscale``: file contents, mode, competing overrides."""
    fs = s.sim.fedscale
    if fs is None:
        return []
    out: list[tuple[str, str]] = []
    for kind in KINDS:
        try:
            fs.table(kind)
        except (ConfigError, OSError) as exc:
            out.append((f"sim.fedscale.{kind}", f"{exc}; see fedgrpo/sim/data/README.md"))
    if s.mode == "live":
        out.append(("sim.fedscale", "traces simulate devices; mode live uses the real ones"))
    if fs.behavior is not None:
        where = [(f"clients.groups.{i}.dropout", g.dropout) for i, g in enumerate(s.clients.groups)]
        where.append(("sim.dropout", s.sim.dropout))
        for path, drop in where:
            if drop is not None and drop.offline is not None:
                out.append(
                    (
                        f"{path}.offline",
                        "sets availability, as sim.fedscale.behavior does; keep one of them",
                    )
                )
    return out
