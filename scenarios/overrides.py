"""``--set a.b.c=VALUE`` overrides on the raw scenario mapping, applied before validation.

Paths use dots; list items are addressed by index (``clients.groups.0.count=3`` or
``clients.groups[0].count=3``). VALUE is parsed as YAML (``3`` -> int, ``[add, sub]`` -> list,
``null`` -> None, ``on`` -> True). Every segment is checked against the schema, so a typo names
the bad path with a did-you-mean suggestion instead of silently creating a key.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import yaml
from pydantic import BaseModel

from fedgrpo.scenarios.schema import Scenario, ScenarioError

_INDEX = re.compile(r"\[(\d+)\]")


def split_path(path: str) -> list[str]:
    """``clients.groups[0].count`` -> ``['clients', 'groups', '0', 'count']``."""
    path = _INDEX.sub(r".\1", path.strip())
    parts = path.split(".")
    if not path or any(p == "" for p in parts):
        raise ScenarioError(
            [f"--set {path!r}: empty path segment; write e.g. round_policy.deadline_s=5"]
        )
    return parts


def parse_value(text: str) -> Any:
    """A YAML scalar/flow value; text that is not valid YAML stays a string."""
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def parse_assignment(spec: str) -> tuple[str, Any]:
    if "=" not in spec:
        raise ScenarioError([f"--set {spec!r}: expected KEY=VALUE, e.g. round_policy.deadline_s=5"])
    key, _, value = spec.partition("=")
    return key.strip(), parse_value(value)


# ----------------------------------------------------------------- schema introspection


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional around a type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def model_fields_by_key(model: type[BaseModel]) -> dict[str, Any]:
    """YAML key (alias if any) -> field annotation."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        out[info.alias or name] = info.annotation
    return out


def is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def type_at(path: Sequence[str | int], root: type[BaseModel] = Scenario) -> Any:
    """The (unwrapped) annotation at ``path`` (ints or digit strings index lists), or None."""
    cur: Any = root
    for part in path:
        cur = _unwrap(cur)
        origin = typing.get_origin(cur)
        if is_model(cur):
            fields = model_fields_by_key(cur)
            if not isinstance(part, str) or part not in fields:
                return None
            cur = fields[part]
        elif origin is list:
            if not (isinstance(part, int) or str(part).isdigit()):
                return None
            cur = typing.get_args(cur)[0]
        elif origin is dict:
            cur = typing.get_args(cur)[1]
        else:
            return None
    return _unwrap(cur)


#: TRL ``GRPOConfig`` names of ``server.grpo`` fields (beta, loss_type, temperature, top_p and
#: num_iterations are spelled the same). One name per concept here: a TRL name gets a hint.
TRL_NAMES = {
    "num_generations": "group_size",
    "max_completion_length": "max_new_tokens",
    "learning_rate": "lr",
    "epsilon": "eps_low",
    "epsilon_high": "eps_high",
    "scale_rewards": "scale",
    "max_grad_norm": "grad_clip",
    "warmup_steps": "warmup_rounds",
}


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    ours = TRL_NAMES.get(word)
    if ours in candidates:
        return f"; TRL's {word!r} is {ours!r} here"
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# ----------------------------------------------------------------- applying


@dataclass(frozen=True)
class _At:
    """Where an override path is being resolved (segment ``depth`` of ``parts``)."""

    path: str
    parts: list[str]
    depth: int

    @property
    def parent(self) -> str:
        return ".".join(self.parts[: self.depth])

    @property
    def here(self) -> str:
        return ".".join(self.parts[: self.depth + 1])

    def fail(self, message: str) -> ScenarioError:
        return ScenarioError([f"--set {self.path}: {message}"])


def _model_key(at: _At, cur: Any, model: type[BaseModel], part: str) -> tuple[str, Any]:
    fields = model_fields_by_key(model)
    if part not in fields:
        raise at.fail(
            f"{part!r} is not a field of {at.parent or 'the scenario'}; "
            f"allowed: {', '.join(fields)}{did_you_mean(part, list(fields))}"
        )
    if not isinstance(cur, dict):
        raise at.fail(f"{at.parent} is not a mapping in the file")
    return part, fields[part]


def _list_key(at: _At, cur: Any, item_type: Any, part: str) -> tuple[int, Any]:
    if not part.isdigit():
        raise at.fail(f"{at.here}: {part!r} is not a list index (use 0, 1, ...)")
    idx = int(part)
    if not isinstance(cur, list) or idx >= len(cur):
        size = len(cur) if isinstance(cur, list) else 0
        raise at.fail(f"index {idx} is out of range; {at.parent} has {size} items")
    return idx, item_type


def _key_and_type(at: _At, cur: Any, cur_type: Any, part: str) -> tuple[str | int, Any]:
    """The key to use in ``cur`` for ``part`` and the schema type found under it."""
    t = _unwrap(cur_type)
    origin = typing.get_origin(t)
    if is_model(t):
        return _model_key(at, cur, t, part)
    if origin is list:
        return _list_key(at, cur, typing.get_args(t)[0], part)
    if origin is dict:
        if not isinstance(cur, dict):
            raise at.fail(f"{at.parent} is not a mapping in the file")
        return part, typing.get_args(t)[1]
    raise at.fail(f"{at.parent} is a single value, it has no field {part!r}")


def _descend(at: _At, cur: Any, key: str | int, next_type: Any) -> Any:
    """``cur[key]``, creating a missing section (but never a missing list's items)."""
    if isinstance(key, int):
        return cur[key]
    if cur.get(key) is None:
        if typing.get_origin(_unwrap(next_type)) is list:
            raise at.fail(f"{at.here} is not set in the file, so it has no item to change")
        cur[key] = {}
    return cur[key]


def apply_override(
    data: dict[str, Any], path: str, value: Any, root: type[BaseModel] = Scenario
) -> None:
    """Set ``path`` in the raw mapping ``data`` (in place), creating missing sections."""
    parts = split_path(path)
    cur: Any = data
    cur_type: Any = root
    for depth, part in enumerate(parts):
        at = _At(path, parts, depth)
        key, next_type = _key_and_type(at, cur, cur_type, part)
        if depth == len(parts) - 1:
            cur[key] = value
            return
        cur, cur_type = _descend(at, cur, key, next_type), next_type


def apply_overrides(data: dict[str, Any], specs: Sequence[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` strings in order; all bad paths are reported together."""
    problems: list[str] = []
    for spec in specs:
        try:
            key, value = parse_assignment(spec)
            apply_override(data, key, value)
        except ScenarioError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ScenarioError(problems)
    return data
