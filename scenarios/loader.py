"""Read, override, validate and dump scenario files with one-line-per-problem errors.

Error lines look like ``scenarios/x.yaml: clients.groups[2].profile: 'rpi6' is not a known
profile; known: rpi4, rpi5, ...``; unknown keys get a did-you-mean suggestion, YAML syntax
errors give line and column. An empty section (``server:`` with nothing under it) means that
section's defaults. Field errors and cross-field errors come out together: after field errors
the loader checks a copy with the bad values left at their defaults, so one run of
``fedgrpo validate`` lists everything.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from fedgrpo.scenarios.checks import Problem, cross_field_errors, environment_errors
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
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{_short(value)} has the wrong type; expected a section (indented key: value lines)"
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


def empty_sections_to_defaults(data: dict[str, Any], model: type[Any] = Scenario) -> None:
    """Drop (in place) every key whose value is empty (None) but whose field is a section, so
    the section takes its defaults; nested sections and lists of sections alike."""
    fields = model_fields_by_key(model)
    for key in list(data):
        if key not in fields:
            continue
        kind = type_at([key], model)
        value = data[key]
        if value is None and is_model(kind):
            del data[key]
        elif isinstance(value, dict) and is_model(kind):
            empty_sections_to_defaults(value, kind)
        elif isinstance(value, list):
            item = type_at([key, 0], model)
            for entry in value:
                if isinstance(entry, dict) and is_model(item):
                    empty_sections_to_defaults(entry, item)


def _drop(data: Any, loc: Sequence[str | int]) -> bool:
    """Delete the deepest mapping key along ``loc``; False when there is none to delete."""
    parent, key, cur = None, None, data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            parent, key, cur = cur, part, cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        else:
            break
    if not isinstance(parent, dict):
        return False
    del parent[key]
    return True


def _repaired(data: dict[str, Any], exc: ValidationError) -> tuple[Scenario | None, list[str]]:
    """The scenario with every invalid value left at its default (None when that is not
    possible, e.g. a required key is missing) and the dotted paths that were dropped."""
    work, dropped = copy.deepcopy(data), list[str]()
    for _ in range(4):
        for err in exc.errors():
            loc = tuple(err["loc"])
            if not _drop(work, loc):
                return None, dropped
            dropped.append(format_path(loc))
        try:
            return Scenario.model_validate(work), dropped
        except ValidationError as again:
            exc = again
    return None, dropped


def _unrelated(problem: Problem, dropped: Sequence[str]) -> bool:
    """True if a cross-field problem does not involve a value that was dropped as invalid."""
    path, msg = problem
    return not any(path.startswith(d) or d in msg for d in dropped)


def scenario_problems(
    data: dict[str, Any], source: str = "<scenario>", environment: bool = False
) -> tuple[Scenario | None, list[str]]:
    """(scenario or None, every problem): field errors, then the cross-field errors that do
    not involve an invalid field, then (``environment``) what this machine lacks."""
    data = copy.deepcopy(data)
    empty_sections_to_defaults(data)
    try:
        scenario: Scenario | None = Scenario.model_validate(data)
        lines, dropped = list[str](), list[str]()
    except ValidationError as exc:
        lines = validation_problems(exc, source)
        scenario, dropped = _repaired(data, exc)
    if scenario is None:
        return None, lines
    found = cross_field_errors(scenario) + (environment_errors(scenario) if environment else [])
    lines += [f"{source}: {p}: {m}" for p, m in found if _unrelated((p, m), dropped)]
    return (None, lines) if lines else (scenario, [])


def validate_dict(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a raw mapping (already overridden); all problems in one ScenarioError."""
    scenario, problems = scenario_problems(data, source)
    if scenario is None:
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


def validate_files(
    paths: Sequence[str | os.PathLike[str]], environment: bool = False
) -> dict[str, list[str]]:
    """Problems per file (empty list = valid); with ``environment`` also what this machine
    lacks (a local model path that does not exist, an unset ``token_env``), as
    ``fedgrpo validate`` reports. Never raises for a bad file."""
    out: dict[str, list[str]] = {}
    for path in paths:
        try:
            out[str(path)] = scenario_problems(load_raw(path), str(path), environment)[1]
        except ScenarioError as exc:
            out[str(path)] = exc.problems
    return out


def shipped_scenarios() -> dict[str, Path]:
    """The scenarios installed with the package (``fedgrpo.scenarios/*.yaml``), by name."""
    root = files("fedgrpo.scenarios")
    found = sorted(
        (entry.name.removesuffix(".yaml"), Path(str(entry)))
        for entry in root.iterdir()
        if entry.name.endswith(".yaml")
    )
    return dict(found)


def scenario_file(name_or_path: str | os.PathLike[str]) -> Path:
    """A scenario file as given, else the shipped scenario of that name (``quickstart``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = shipped_scenarios()
    name = path.name.removesuffix(".yaml")
    if name in shipped:
        return shipped[name]
    raise ScenarioError(
        [f"{path}: file not found and not a shipped scenario; known: {', '.join(shipped)}"]
    )


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
