"""Read, override, validate and dump scenario files with one-line-per-problem errors.

Error lines look like ``scenarios/x.yaml: clients.groups[2].profile: 'rpi6' is not a known
profile; known: rpi4, rpi5, ...``; unknown keys get a did-you-mean suggestion, YAML syntax
errors give line and column.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedgrpo.scenarios.checks import cross_field_errors
from fedgrpo.scenarios.overrides import (
    apply_overrides,
    did_you_mean,
    is_model,
    model_fields_by_key,
    type_at,
)
from fedgrpo.scenarios.schema import Scenario, ScenarioError

RESOLVED_NAME = "scenario.yaml"


def format_path(loc: Sequence[str | int]) -> str:
    """``('clients', 'groups', 2, 'profile')`` -> ``clients.groups[2].profile``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(err: dict[str, Any]) -> str:
    kind: str = err["type"]
    loc = tuple(err["loc"])
    value = err.get("input")
    msg: str = err["msg"]
    ctx = err.get("ctx") or {}
    if kind.startswith("fedgrpo_"):
        return msg
    if kind == "extra_forbidden":
        parent = type_at(loc[:-1])
        key = str(loc[-1])
        if is_model(parent):
            fields = list(model_fields_by_key(parent))
            return f"unknown key; allowed: {', '.join(fields)}{did_you_mean(key, fields)}"
        return "unknown key"
    if kind == "missing":
        return "is required but missing"
    if kind == "literal_error":
        allowed = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{_short(value)} is not allowed; allowed: {allowed}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{_short(value)} is out of range; {msg[0].lower()}{msg[1:]}"
    if kind == "string_pattern_mismatch":
        return f"{_short(value)} is not allowed; use letters, digits and . _ = + , - (no spaces or slashes)"
    if kind == "too_short":
        return f"{_short(value)} is too short; {msg[0].lower()}{msg[1:]}"
    if kind.startswith("value_error"):
        return f"{_short(value)}: {msg.removeprefix('Value error, ')}"
    # wrong types and the rest: "'abc' is not valid: input should be a valid integer"
    text = msg.split(",")[0] if kind.endswith("_parsing") else msg
    return f"{_short(value)} has the wrong type; {text[0].lower()}{text[1:]}"


def validation_problems(exc: ValidationError, source: str) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        lines.append(f"{source}: {format_path(loc)}: {_describe(dict(err))}")
    return lines


def read_yaml(path: Path) -> dict[str, Any]:
    """The raw mapping in ``path``; missing file, bad YAML or a non-mapping raise ScenarioError."""
    source = str(path)
    if not path.exists():
        raise ScenarioError([f"{source}: file not found"])
    if path.is_dir():
        raise ScenarioError([f"{source}: is a directory, expected a scenario .yaml file"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError([f"{source}: cannot read: {exc}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "?"
        raise ScenarioError([f"{source}: YAML syntax error at {where}: {problem}"]) from exc
    if data is None:
        raise ScenarioError(
            [f"{source}: file is empty; expected a mapping with at least name: ..."]
        )
    if not isinstance(data, dict):
        raise ScenarioError(
            [
                f"{source}: top level is a {type(data).__name__}, expected a mapping (key: value lines)"
            ]
        )
    return data


def validate_dict(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a raw mapping (already overridden); all problems in one ScenarioError."""
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(validation_problems(exc, source)) from None
    problems = [f"{source}: {path}: {msg}" for path, msg in cross_field_errors(scenario)]
    if problems:
        raise ScenarioError(problems)
    return scenario


def load_raw(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The file's mapping with ``name`` defaulted to the file stem and overrides applied."""
    p = Path(path)
    data = read_yaml(p)
    data.setdefault("name", p.stem)
    if overrides:
        try:
            apply_overrides(data, overrides)
        except ScenarioError as exc:
            raise ScenarioError([f"{p}: {line}" for line in exc.problems]) from None
    return data


def load_scenario(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Scenario:
    """Read, override (``["a.b=3", ...]``) and validate a scenario file."""
    return validate_dict(load_raw(path, overrides), source=str(path))


def validate_files(paths: Sequence[str | os.PathLike[str]]) -> dict[str, list[str]]:
    """Problems per file (empty list = valid); never raises for an invalid file."""
    out: dict[str, list[str]] = {}
    for path in paths:
        try:
            load_scenario(path)
            out[str(path)] = []
        except ScenarioError as exc:
            out[str(path)] = exc.problems
    return out


def scenario_to_dict(scenario: Scenario) -> dict[str, Any]:
    return scenario.model_dump(mode="json", by_alias=True)


def with_overrides(
    scenario: Scenario, overrides: Sequence[str], source: str = "<scenario>"
) -> Scenario:
    """A validated copy of ``scenario`` with ``--set`` style overrides applied."""
    data = copy.deepcopy(scenario_to_dict(scenario))
    try:
        apply_overrides(data, overrides)
    except ScenarioError as exc:
        raise ScenarioError([f"{source}: {line}" for line in exc.problems]) from None
    return validate_dict(data, source)


def dump_scenario(scenario: Scenario, path: str | os.PathLike[str]) -> Path:
    """Write the fully resolved scenario (every default spelled out) as YAML; loadable again."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# resolved scenario {scenario.name!r}, written {_dt.datetime.now().isoformat(timespec='seconds')}\n"
        "# every default is spelled out; `fedgrpo run --resume DIR` reads this file back\n"
    )
    body = yaml.safe_dump(scenario_to_dict(scenario), sort_keys=False, allow_unicode=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    os.replace(tmp, p)
    return p


def new_run_dir(scenario: Scenario, out_root: str | os.PathLike[str] = "runs") -> Path:
    """Create ``OUT_ROOT/<scenario>/<YYYYmmdd-HHMMSS>[-N]/`` and write the resolved scenario."""
    base = Path(out_root) / scenario.name
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_dir = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 1000 runs in one second
        raise ScenarioError([f"{base}: cannot create a fresh run directory"])
    dump_scenario(scenario, run_dir / RESOLVED_NAME)
    return run_dir


def load_run_scenario(run_dir: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Scenario:
    """The resolved scenario saved in a run directory (for ``--resume``)."""
    path = Path(run_dir) / RESOLVED_NAME
    if not path.exists():
        raise ScenarioError([f"{run_dir}: not a run directory (no {RESOLVED_NAME})"])
    return load_scenario(path, overrides)
