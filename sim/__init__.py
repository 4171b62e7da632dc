"""fedgrpo simulator: heterogeneous devices, stragglers and dropouts in virtual time (simpy).

>>> from sim import SimConfig, run_simulation
>>> result = run_simulation(SimConfig.mixed(100, {"rpi4": 1, "phone-4g": 1}), rounds=10, seed=0)

Rounds are driven through :mod:`fedgrpo.rounds` (the same semantics as the live gatherer).
"""

from fedgrpo.sim.availability import (
    AlwaysOn,
    MarkovAvailability,
    TraceAvailability,
    load_fedscale_capacity,
    load_fedscale_trace,
)
from fedgrpo.sim.config import (
    AvailabilitySpec,
    ClientSpec,
    SimConfig,
    WorkloadSpec,
    clients_from_fedscale,
)
from fedgrpo.sim.devices import PROFILES, SIZE_CLASSES, DeviceProfile, get_profile
from fedgrpo.sim.engine import Simulator, run_simulation
from fedgrpo.sim.result import SimResult, StaleResult
from fedgrpo.sim.rewards import CompetenceRewards, ModelRewards, RoundInput, surrogate_rounds

__all__ = [
    "PROFILES",
    "SIZE_CLASSES",
    "AlwaysOn",
    "AvailabilitySpec",
    "ClientSpec",
    "CompetenceRewards",
    "DeviceProfile",
    "MarkovAvailability",
    "ModelRewards",
    "RoundInput",
    "SimConfig",
    "SimResult",
    "Simulator",
    "StaleResult",
    "TraceAvailability",
    "WorkloadSpec",
    "clients_from_fedscale",
    "get_profile",
    "load_fedscale_capacity",
    "load_fedscale_trace",
    "run_simulation",
    "surrogate_rounds",
]
