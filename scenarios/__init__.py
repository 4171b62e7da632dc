"""Scenario files: the typed schema (:mod:`~fedgrpo.scenarios.schema`, field helpers in
:mod:`~fedgrpo.scenarios.fields`, cross-field checks in :mod:`~fedgrpo.scenarios.checks`),
loading with clear errors, ``--set`` overrides, and :mod:`~fedgrpo.scenarios.mapping`, the one
place that turns validated sections into the runtime dataclasses. See docs in each module.

Importing this package is cheap (pydantic + pyyaml); matplotlib and the runner load lazily.
"""

from fedgrpo.scenarios.loader import dump_scenario, load_scenario, new_run_dir, validate_dict
from fedgrpo.scenarios.schema import Scenario, ScenarioError, known_profiles

__all__ = [
    "Scenario",
    "ScenarioError",
    "dump_scenario",
    "known_profiles",
    "load_scenario",
    "new_run_dir",
    "validate_dict",
]
