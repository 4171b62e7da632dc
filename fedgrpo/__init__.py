"""fedgrpo: reward-only federated GRPO of a server language model.

The installed namespace. The repository keeps one folder per concern at its top level
(``edge/``, ``rounds/``, ``sim/``, ``server/``, ``scenarios/``, ``experiments/``); this
package links them in as ``fedgrpo.edge``, ``fedgrpo.sim``, … so that nothing is installed
under a generic top-level name. See ``docs/architecture.md``.

The Python API (:mod:`fedgrpo.experiments.api`) is re-exported here and imported only when
first used, so ``import fedgrpo`` (and the device side, ``fedgrpo.edge``) stays light::

    from fedgrpo import run_scenario, sweep, load_run
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("fedgrpo")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

#: names served lazily from fedgrpo.experiments.api
_API = ("run_scenario", "sweep", "load_run", "RunResult", "SweepRuns")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'fedgrpo' has no attribute {name!r}")
    try:
        from fedgrpo.experiments import api
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "fedgrpo":
            raise
        from fedgrpo.errors import MissingExtraError

        raise MissingExtraError("server", exc.name) from exc
    return getattr(api, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
