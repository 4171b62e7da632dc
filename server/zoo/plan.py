"""What a build will train, and about how long it will take — said before it starts.

A run, sweep, demo or emulate whose zoo models are not all in the cache trains them first
(a ``--set clients.groups.0.count=10`` needs five new experts). :func:`plan_build` lists the
recipes missing from the cache and estimates the wall time from a measured per-step cost:

* the median ``train_seconds / steps`` of the models already in this cache (every entry's
  manifest records how long it took to train), so the estimate follows this machine;
* else :data:`CALIBRATED_S_PER_STEP`, measured on the project's 2-core development VM.

The build runs ``workers`` recipes at a time in the order given (the server base first), so
the estimate is that schedule's makespan.
"""

from __future__ import annotations

import heapq
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedgrpo.server.zoo.cache import MANIFEST, ModelCache
from fedgrpo.server.zoo.recipes import ModelRecipe

# Seconds per training step of a tiny zoo model, one torch thread, two builds side by side (as
# `fedgrpo models build` trains: 2 workers). Measured 2026-12-02 on the project's 2-core
# development VM (fedgrpo_manifest.json "train_seconds" / recipe steps): server-base 212.3 s /
# 600 steps = 0.354, expert-0 79.9 s / 250 = 0.320, expert-1 94.1 s / 250 = 0.376; median 0.35.
# The same VM shared with other jobs took up to 1.05 s/step, hence the cache's own figures first.
CALIBRATED_S_PER_STEP = 0.35
CACHE_SAMPLE = 50  # manifests read at most to measure the cost (newest first)
# entries trained for fewer steps are not used to measure: a worker's start-up (spawn, torch
# import) dominates them (a 3-step test model: 0.2-15 s per step on the same machine)
MIN_MEASURED_STEPS = 50


@dataclass(frozen=True)
class BuildPlan:
    """Recipes to train (``missing``), how many are cached, and the time estimate."""

    missing: tuple[ModelRecipe, ...]
    cached: int
    s_per_step: float
    cost_source: str
    workers: int

    def seconds(self, recipe: ModelRecipe) -> float:
        return recipe.train.steps * self.s_per_step

    @property
    def estimate_s(self) -> float:
        return makespan([self.seconds(r) for r in self.missing], self.workers)


def makespan(durations: Sequence[float], workers: int) -> float:
    """Wall time of running ``durations`` in order on ``workers`` parallel slots."""
    slots = [0.0] * max(1, min(workers, len(durations)))
    for d in durations:
        heapq.heappush(slots, heapq.heappop(slots) + d)
    return max(slots) if durations else 0.0


def measured_s_per_step(models_dir: Path, min_steps: int = MIN_MEASURED_STEPS) -> tuple[float, str]:
    """(seconds per step, where that figure comes from) for this cache."""
    costs = []
    manifests = sorted(
        models_dir.glob(f"*/{MANIFEST}"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for manifest in manifests[:CACHE_SAMPLE]:
        try:
            build = json.loads(manifest.read_text()).get("build", {})
            steps = json.loads((manifest.parent / "recipe.json").read_text())["train"]["steps"]
            if int(steps) >= min_steps:
                costs.append(float(build["train_seconds"]) / int(steps))
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            continue  # an entry from an older version, or being written
    if costs:
        n = len(costs)
        return statistics.median(costs), f"measured on {n} model{'s' * (n != 1)} in this cache"
    return CALIBRATED_S_PER_STEP, "calibrated on a 2-core machine; no model cached here yet"


def plan_build(
    recipes: Sequence[ModelRecipe],
    models_dir: Path,
    workers: int = 2,
    min_steps: int = MIN_MEASURED_STEPS,
) -> BuildPlan:
    """Which of ``recipes`` are missing (or corrupted) in the cache, and the estimate."""
    cache = ModelCache(models_dir)
    missing = tuple(r for r in recipes if cache.verify(r) is not None)
    cost, source = measured_s_per_step(models_dir, min_steps)
    return BuildPlan(missing, len(recipes) - len(missing), cost, source, workers)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def announcement(plan: BuildPlan, models_dir: Path, prebuild_hint: bool = True) -> str:
    """The lines printed before training (empty when nothing is missing)."""
    if not plan.missing:
        return ""
    n = len(plan.missing)
    lines = [
        f"[fedgrpo] training {n} model{'s' * (n != 1)} missing from {models_dir} first "
        f"({plan.cached} cached): about {_duration(plan.estimate_s)}, "
        f"{min(plan.workers, n)} at a time "
        f"({plan.s_per_step:.2f} s/step, {plan.cost_source})"
    ]
    for r in plan.missing:
        lines.append(f"  {r.name:14s} {r.train.steps:5d} steps  ~{_duration(plan.seconds(r))}")
    if prebuild_hint:
        lines.append(
            "[fedgrpo] to train them ahead of time: fedgrpo models build SCENARIO "
            f"[--set KEY=VALUE ...] --models-dir {models_dir} (the same file and --set)"
        )
    return "\n".join(lines)
