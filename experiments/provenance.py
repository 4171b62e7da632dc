"""Where a result came from: ``provenance.json`` in every run directory.

Written by :func:`fedgrpo.experiments.runner.run_scenario` before the first round, so even an
interrupted or failed run records it: the exact command line, the git commit of the code
(when it runs from a git checkout; ``null`` otherwise, never an error), the versions of the
packages that shape results, the machine, and every model the scenario names (zoo models by
recipe hash and cache path; built-in and local sources as given). A resumed run keeps the
first record and appends one entry per resume (time, command line, commit) under
``"resumes"``. Secrets are never written: environment variables are limited to the
non-secret ``FEDGRPO_*`` settings (tokens are left out).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fedgrpo.experiments.context import models_dir, zoo_spec
from fedgrpo.scenarios.schema import ZOO_PREFIX, Scenario

PROVENANCE_NAME = "provenance.json"
PACKAGES = (
    "fedgrpo",
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "onnxruntime",
    "onnx",
    "optimum-onnx",
    "numpy",
    "simpy",
    "aiohttp",
    "pydantic",
    "pyyaml",
)
# the repository root: experiments/ resolved through the fedgrpo/experiments link
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):  # no git binary, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_info(root: Path = SOURCE_ROOT) -> dict[str, Any] | None:
    """Commit, branch and uncommitted changes of the checkout holding the code; None when the
    code is not in a git checkout (an installed wheel) or git is missing."""
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {
        "commit": commit,
        "branch": _git(root, "rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(changed),
        "changed_files": changed,
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None: not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_executable": sys.executable,
    }


def command_info() -> dict[str, Any]:
    """The exact command line, the working directory and the FEDGRPO_* settings."""
    env = {
        k: v for k, v in sorted(os.environ.items()) if k.startswith("FEDGRPO_") and "TOKEN" not in k
    }
    return {
        "argv": list(sys.argv),
        "command": shlex.join(sys.argv),
        "cwd": os.getcwd(),
        "env": env,
    }


def model_info(s: Scenario) -> dict[str, Any]:
    """Every model the scenario names: zoo models with recipe digest and cache path, other
    sources (builtin:NAME, local paths, hub ids) as given, local paths also resolved."""
    sources = {s.server.model, *(c.model for c in s.client_list())}
    recipes = {r.name: r for r in zoo_spec(s).recipes()}
    zoo: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for source in sorted(sources):
        if source.startswith(ZOO_PREFIX) and source[len(ZOO_PREFIX) :] in recipes:
            recipe = recipes[source[len(ZOO_PREFIX) :]]
            path = models_dir() / recipe.cache_key
            zoo[recipe.name] = {
                "recipe_digest": recipe.digest(),
                "cache_key": recipe.cache_key,
                "path": str(path.resolve()),
                "cached": path.is_dir(),
            }
        else:
            local = Path(source).expanduser()
            other[source] = {"path": str(local.resolve()) if local.exists() else None}
    return {"models_dir": str(models_dir().resolve()), "zoo": zoo, "sources": other}


def collect(s: Scenario) -> dict[str, Any]:
    """The whole provenance record of a run of ``s`` started now."""
    return {
        "scenario": s.name,
        "mode": s.mode,
        "seed": s.seed,
        "started": _now(),
        "command": command_info(),
        "git": git_info(),
        "packages": package_versions(),
        "machine": machine_info(),
        "models": model_info(s) if s.models_needed else None,
    }


def write_provenance(s: Scenario, run_dir: Path, resume: bool = False) -> Path:
    """Write ``run_dir/provenance.json`` (a resume appends to ``"resumes"``); returns it."""
    path = Path(run_dir) / PROVENANCE_NAME
    record: dict[str, Any] | None = None
    if resume and path.exists():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            record = None
    if record is None:
        record = collect(s)
    else:
        record.setdefault("resumes", []).append(
            {"started": _now(), "command": command_info(), "git": git_info()}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
