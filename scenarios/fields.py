"""Field-level building blocks of the scenario schema: the registries the schema checks names
against (domains, device profiles, built-in models), model-source checks and our error type.

Kept apart from :mod:`fedgrpo.scenarios.schema` so the schema file holds only the sections.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any, Literal

from pydantic_core import PydanticCustomError

from fedgrpo.errors import ConfigError

ZOO_PREFIX = "zoo:"
BUILTIN_PREFIX = "builtin:"
ZOO_SERVER_MODELS = ("server-base",)
# `zoo:expert` = the zoo expert trained on this client's partition; `zoo:expert-K` = expert K.
ZOO_EXPERT = "expert"
ZOO_EXPERT_K = re.compile(r"^expert-(\d+)$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$"
URL_RE = re.compile(r"^https?://\S+$")


class ScenarioError(ConfigError):
    """A scenario file cannot be read or is invalid; ``str()`` is one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


@functools.lru_cache(maxsize=1)
def known_profiles() -> tuple[str, ...]:
    """Device profile names of the simulator's registry (``fedgrpo.sim.devices.PROFILES``)."""
    from fedgrpo.sim.devices import PROFILES

    return tuple(sorted(PROFILES))


def known_domains() -> tuple[str, ...]:
    from fedgrpo.server.tasks import DOMAINS

    return tuple(DOMAINS)


def known_builtins() -> tuple[str, ...]:
    from fedgrpo.edge.builtin_models import BUILTINS

    return tuple(BUILTINS)


def err(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    """A validation error whose message the loader prints as-is (``fedgrpo_`` prefix)."""
    return PydanticCustomError(f"fedgrpo_{kind}", message, ctx)


def zoo_expert_index(model: str) -> int | None:
    """K for ``zoo:expert-K``, else None."""
    if not model.startswith(ZOO_PREFIX):
        return None
    m = ZOO_EXPERT_K.match(model[len(ZOO_PREFIX) :])
    return None if m is None else int(m.group(1))


def _check_zoo_source(value: str, role: Literal["server", "client"]) -> None:
    name = value[len(ZOO_PREFIX) :]
    ok = name in ZOO_SERVER_MODELS or (
        role == "client" and (name == ZOO_EXPERT or ZOO_EXPERT_K.match(name) is not None)
    )
    if ok:
        return
    allowed = (
        [f"{ZOO_PREFIX}{n}" for n in ZOO_SERVER_MODELS]
        if role == "server"
        else [f"{ZOO_PREFIX}{ZOO_EXPERT}", f"{ZOO_PREFIX}expert-K", f"{ZOO_PREFIX}server-base"]
    )
    raise err(
        "model",
        "'{value}' is not a zoo model; allowed: {allowed}, builtin:NAME or a local path",
        value=value,
        allowed=", ".join(allowed),
    )


def check_model_source(value: str, role: Literal["server", "client"]) -> str:
    """``zoo:...``, ``builtin:NAME`` or a non-empty path; raises a schema error otherwise."""
    if value.startswith(ZOO_PREFIX):
        _check_zoo_source(value, role)
    elif value.startswith(BUILTIN_PREFIX):
        builtins = known_builtins()
        if value[len(BUILTIN_PREFIX) :] not in builtins:
            raise err(
                "model",
                "'{value}' is not a built-in model; known: {known}",
                value=value,
                known=", ".join(BUILTIN_PREFIX + b for b in builtins),
            )
    elif not value.strip():
        raise err("model", "model source is empty; give zoo:..., builtin:NAME or a path")
    return value


def check_known(value: str, known: tuple[str, ...], kind: str) -> str:
    """``value`` if it is one of ``known``, else a schema error listing them."""
    if value not in known:
        raise err(
            kind,
            "'{value}' is not a known {what}; known: {known}",
            value=value,
            what=kind,
            known=", ".join(known),
        )
    return value


def check_url(value: str) -> str:
    if not URL_RE.match(value):
        raise err("url", "'{value}' is not an http(s) URL", value=value)
    return value
