"""Train the zoo models a batch of runs needs once, up front, saying what and how long.

A sweep's variants run in worker processes that would each find the same models missing
(``--grid clients.groups.0.count=5,10`` needs new experts) and train them side by side;
:func:`prebuild_models` trains the union once in the parent first, after the announcement of
:mod:`fedgrpo.server.zoo.plan`. Nothing happens when every model is cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from fedgrpo.experiments.context import models_dir, zoo_spec
from fedgrpo.scenarios.schema import ZOO_PREFIX, Scenario

if TYPE_CHECKING:
    from fedgrpo.server.zoo.recipes import ModelRecipe


def uses_zoo(s: Scenario) -> bool:
    """True when the scenario names ``zoo:`` models (its server's or a client's)."""
    return s.server.model.startswith(ZOO_PREFIX) or any(
        c.model.startswith(ZOO_PREFIX) for c in s.client_list()
    )


def zoo_recipes(scenarios: Sequence[Scenario]) -> list[ModelRecipe]:
    """Every zoo recipe the scenarios load, each once (by cache key), in first-seen order
    (timing-only simulations load none)."""
    seen: dict[str, ModelRecipe] = {}
    for s in scenarios:
        if s.models_needed and uses_zoo(s):
            for r in zoo_spec(s).recipes():
                seen.setdefault(r.cache_key, r)
    return list(seen.values())


def prebuild_models(scenarios: Sequence[Scenario], workers: int = 2, enabled: bool = True) -> None:
    """Announce and train the scenarios' missing zoo models (no-op when all are cached, or
    when not ``enabled``: a sweep with its own runner trains nothing here)."""
    from fedgrpo.server.zoo.commands import build_default_zoo
    from fedgrpo.server.zoo.plan import plan_build

    recipes = zoo_recipes(scenarios) if enabled else []
    if recipes and plan_build(recipes, models_dir(), workers).missing:
        build_default_zoo(models_dir(), recipes, workers=max(1, workers))
