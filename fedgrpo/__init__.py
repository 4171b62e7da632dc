"""fedgrpo: reward-only federated GRPO of a server language model.

The installed namespace. The repository keeps one folder per concern at its top level
(``edge/``, ``rounds/``, ``sim/``, ``server/``, ``scenarios/``, ``experiments/``); this
package links them in as ``fedgrpo.edge``, ``fedgrpo.sim``, … so that nothing is installed
under a generic top-level name. See ``docs/architecture.md``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedgrpo")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
