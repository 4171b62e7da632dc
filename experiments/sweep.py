"""``fedgrpo sweep``: a cartesian grid of overrides x seeds, run in parallel worker processes
(or as Ray tasks, locally or on a cluster: :mod:`fedgrpo.experiments.sweep_ray`).

Every variant is validated before anything runs. Variants run in a spawn
``ProcessPoolExecutor`` calling a runner ``run_scenario(scenario, run_dir, resume) -> dict``
(default ``fedgrpo.experiments.runner.run_scenario``; tests inject a module-level fake). A variant that
raises is recorded as failed; the others go on. Outputs land in
``OUT_ROOT/<scenario>-sweep/<timestamp>/``: ``runs/<variant>/`` (one run dir each),
``variants.csv`` (one row per variant), ``comparison.md|csv`` (one row per grid point, mean ±
std over seeds) and ``comparison.png`` (the chosen metric per grid point with std error bars).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import multiprocessing
import os
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgrpo.experiments.plots import save_figure, sweep_figure
from fedgrpo.experiments.prebuild import prebuild_models
from fedgrpo.experiments.records import atomic_write, write_csv
from fedgrpo.experiments.report import mean_std
from fedgrpo.scenarios.loader import RESOLVED_NAME, dump_scenario, load_raw, validate_dict
from fedgrpo.scenarios.overrides import apply_override, apply_overrides, parse_value, split_path
from fedgrpo.scenarios.schema import Scenario, ScenarioError

Runner = Callable[[Scenario, Path, bool], Mapping[str, Any]]
Outcome = tuple[str, dict[str, Any], str]  # (status "ok" | "failed", summary, error text)


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,[a, b]`` on top-level commas (not inside [] / {} / quotes)."""
    parts: list[str] = []
    depth, quote, cur = 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        cur += ch
    parts.append(cur.strip())
    return parts


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["a.b=1,2", "c=x,y"]`` -> ``{"a.b": [1, 2], "c": ["x", "y"]}`` (values YAML-parsed)."""
    grid: dict[str, list[Any]] = {}
    problems = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            problems.append(
                f"--grid {spec!r}: expected KEY=V1,V2,..., e.g. sim.dropout.offline=0,0.1"
            )
            continue
        if key in grid:
            problems.append(f"--grid {key}: given twice; put all values in one --grid")
            continue
        grid[key] = [parse_value(v) for v in split_values(values)]
    if problems:
        raise ScenarioError(problems)
    return grid


def _slug(value: Any) -> str:
    text = str(value).replace(" ", "")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


@dataclass
class Variant:
    """One grid point x one seed."""

    name: str
    point: dict[str, Any]
    seed: int
    scenario: Scenario

    @property
    def point_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.point.items()) or "(base)"


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Last path segment if unambiguous, else the full path."""
    lasts = [split_path(k)[-1] for k in keys]
    return {k: (last if lasts.count(last) == 1 else k) for k, last in zip(keys, lasts)}


def expand_grid(
    base: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    seeds: int = 1,
    source: str = "<scenario>",
) -> list[Variant]:
    """All variants (cartesian grid x ``seeds`` seeds counting from the base seed), validated.

    Problems of all variants are reported together in one ScenarioError.
    """
    import copy

    if seeds < 1:
        raise ScenarioError([f"--seeds {seeds}: need at least 1"])
    keys = list(grid)
    short = short_keys(keys)
    base_name = str(base.get("name", "scenario"))
    base_seed = int(base.get("seed", 0) or 0)
    variants: list[Variant] = []
    problems: list[str] = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        for s in range(seeds):
            seed = base_seed + s
            parts = [f"{short[k]}={_slug(v)}" for k, v in point.items()]
            name = "-".join([base_name, *parts, f"seed{seed}"])
            data = copy.deepcopy(dict(base))
            try:
                for key, value in point.items():
                    apply_override(data, key, copy.deepcopy(value))
                data["seed"] = seed
                data["name"] = name
                scenario = validate_dict(data, f"{source} [{', '.join(parts) or 'base'}]")
            except ScenarioError as exc:
                problems += [p for p in exc.problems if p not in problems]
                continue
            variants.append(Variant(name=name, point=point, seed=seed, scenario=scenario))
    if problems:
        raise ScenarioError(problems)
    return variants


@dataclass
class VariantResult:
    variant: Variant
    run_dir: Path
    status: str  # "ok" | "failed"
    summary: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class SweepResult:
    sweep_dir: Path
    results: list[VariantResult]
    files: list[Path]

    @property
    def failed(self) -> list[VariantResult]:
        return [r for r in self.results if r.status != "ok"]


def _default_runner(scenario: Scenario, run_dir: Path, resume: bool) -> Mapping[str, Any]:
    from fedgrpo.experiments.runner import run_scenario  # type: ignore[import-not-found,unused-ignore]

    result: Mapping[str, Any] = run_scenario(scenario, run_dir, resume)
    return result


def _init_worker(threads: int) -> None:
    """Share the cores between workers: cap BLAS/OpenMP threads unless the user set them."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def _run_variant(runner: Runner | None, scenario: Scenario, run_dir: Path) -> Outcome:
    """Worker entry point (module level, picklable): never raises for a failing run."""
    try:
        fn = runner or _default_runner
        summary = fn(scenario, run_dir, False)
        return "ok", dict(summary or {}), ""
    except Exception as exc:  # a failed variant is reported, never fatal to the sweep
        tb = traceback.format_exc(limit=8)
        return "failed", {}, f"{type(exc).__name__}: {exc}\n{tb}"


def run_sweep(
    path: str | os.PathLike[str] | Mapping[str, Any],
    grid_specs: Sequence[str] | Mapping[str, Sequence[Any]],
    seeds: int = 1,
    workers: int = 2,
    out_root: str | os.PathLike[str] = "runs",
    overrides: Sequence[str] = (),
    runner: Runner | None = None,
    metric: str = "final_mean_accuracy",
    progress: bool = True,
    backend: str = "local",
    address: str | None = None,
) -> SweepResult:
    """Run the grid; ``workers=0`` runs variants in this process (debugging); ``backend="ray"``
    runs them as Ray tasks (``fedgrpo.experiments.sweep_ray``; ``address``: a cluster).
    ``path`` may be a raw scenario mapping and ``grid_specs`` a ``{key: values}`` mapping
    (the Python API)."""
    from fedgrpo.experiments.sweep_ray import check_backend

    check_backend(backend)  # before any output directory is made
    raw, source = _load_raw(path, overrides)
    grid = (
        {k: list(v) for k, v in grid_specs.items()}
        if isinstance(grid_specs, Mapping)
        else parse_grid(grid_specs)
    )
    variants = expand_grid(raw, grid, seeds, source=source)
    prebuild_models([v.scenario for v in variants], workers, enabled=runner is None)
    sweep_dir = _new_sweep_dir(Path(out_root) / f"{raw['name']}-sweep")
    run_dirs = _make_run_dirs(sweep_dir, variants)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(variants), desc="sweep", unit="run", disable=None)  # TTY only
    results: list[VariantResult] = []

    def record(v: Variant, outcome: Outcome) -> None:
        status, summary, error = outcome
        results.append(VariantResult(v, run_dirs[v.name], status, summary, error))
        if bar is not None:
            bar.set_postfix_str(f"{v.name}: {status}")
            bar.update(1)

    try:
        if backend == "ray":
            from fedgrpo.experiments.sweep_ray import run_on_ray

            run_on_ray(variants, run_dirs, runner, address, record)
        else:
            _run_all(variants, run_dirs, runner, workers, record)
    finally:
        if bar is not None:
            bar.close()
    order = {v.name: i for i, v in enumerate(variants)}
    results.sort(key=lambda r: order[r.variant.name])
    files = write_sweep_outputs(sweep_dir, results, list(grid), metric)
    return SweepResult(sweep_dir=sweep_dir, results=results, files=files)


def _load_raw(
    path: str | os.PathLike[str] | Mapping[str, Any], overrides: Sequence[str]
) -> tuple[dict[str, Any], str]:
    """The raw scenario and its source label: a file, or a mapping (the Python API)."""
    if isinstance(path, Mapping):
        import copy

        return apply_overrides(copy.deepcopy(dict(path)), overrides), "<dict>"
    return load_raw(path, overrides), str(path)


def _new_sweep_dir(parent: Path) -> Path:
    """``parent/<timestamp>`` (``-1``, ``-2``... when taken), created with its ``runs/``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    sweep_dir = parent / stamp
    n = 1
    while sweep_dir.exists():
        sweep_dir = sweep_dir.with_name(f"{stamp}-{n}")
        n += 1
    (sweep_dir / "runs").mkdir(parents=True)
    return sweep_dir


def _make_run_dirs(sweep_dir: Path, variants: Sequence[Variant]) -> dict[str, Path]:
    """One ``runs/<variant>/`` per variant, holding its resolved scenario; by variant name."""
    run_dirs = {}
    for v in variants:
        rd = sweep_dir / "runs" / v.name
        rd.mkdir(parents=True)
        dump_scenario(v.scenario, rd / RESOLVED_NAME)
        run_dirs[v.name] = rd
    return run_dirs


def _run_all(
    variants: Sequence[Variant],
    run_dirs: Mapping[str, Path],
    runner: Runner | None,
    workers: int,
    record: Callable[[Variant, Outcome], None],
) -> None:
    """Run every variant (in this process when ``workers <= 0``, else in spawned worker
    processes) and hand each outcome to ``record`` as it finishes."""
    if workers <= 0:
        for v in variants:
            record(v, _run_variant(runner, v.scenario, run_dirs[v.name]))
        return
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures: dict[Future[Outcome], Variant] = {
            pool.submit(_run_variant, runner, v.scenario, run_dirs[v.name]): v for v in variants
        }
        for fut in as_completed(futures):
            v = futures[fut]
            try:
                outcome = fut.result()
            except Exception as exc:  # worker process died (BrokenProcessPool, pickling)
                outcome = ("failed", {}, f"{type(exc).__name__}: {exc}")
            record(v, outcome)


def variant_rows(results: Sequence[VariantResult], metric: str) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        row: dict[str, Any] = {"variant": r.variant.name, **r.variant.point, "seed": r.variant.seed}
        row["status"] = r.status
        row[metric] = r.summary.get(metric)
        for key in ("final_mean_accuracy", "best_mean_accuracy", "wall_s", "virtual_s", "total_bytes"):
            row.setdefault(key, r.summary.get(key))
        row["run_dir"] = str(r.run_dir)
        row["error"] = r.error.splitlines()[0] if r.error else ""
        rows.append(row)
    return rows


def point_rows(
    results: Sequence[VariantResult], keys: Sequence[str], metric: str
) -> list[dict[str, Any]]:
    """One row per grid point: the point, n ok / failed, mean and std of ``metric`` over seeds."""
    points: dict[str, list[VariantResult]] = {}
    for r in results:
        points.setdefault(r.variant.point_label, []).append(r)
    rows = []
    for label, members in points.items():
        ok = [m for m in members if m.status == "ok"]
        mean, std, n = mean_std([m.summary.get(metric) for m in ok])
        row: dict[str, Any] = {"point": label, **members[0].variant.point}
        row.update({"ok": len(ok), "failed": len(members) - len(ok), "n": n})
        row.update({f"{metric}_mean": mean, f"{metric}_std": std})
        rows.append(row)
    return rows


def _fmt_num(x: Any) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def write_sweep_outputs(
    sweep_dir: Path, results: Sequence[VariantResult], keys: Sequence[str], metric: str
) -> list[Path]:
    files = [write_csv(sweep_dir / "variants.csv", variant_rows(results, metric))]
    rows = point_rows(results, keys, metric)
    files.append(write_csv(sweep_dir / "comparison.csv", rows))
    header = [*keys, "ok", "failed", f"{metric} (mean ± std)"]
    lines = [
        f"# sweep {sweep_dir.parent.name}/{sweep_dir.name}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
        cell = "-" if mean is None else f"{_fmt_num(mean)} ± {_fmt_num(std)}"
        lines.append(
            "| "
            + " | ".join([*(str(row[k]) for k in keys), str(row["ok"]), str(row["failed"]), cell])
            + " |"
        )
    failed = [r for r in results if r.status != "ok"]
    if failed:
        lines += ["", "## failed variants", ""]
        lines += [
            f"- `{r.variant.name}`: {r.error.splitlines()[0] if r.error else 'failed'}"
            for r in failed
        ]
    md = sweep_dir / "comparison.md"
    atomic_write(md, "\n".join(lines) + "\n")
    files.append(md)
    plot = _plot_points(sweep_dir / "comparison.png", rows, keys, metric)
    if plot is not None:
        files.append(plot)
    return files


def _plot_points(
    path: Path, rows: Sequence[Mapping[str, Any]], keys: Sequence[str], metric: str
) -> Path | None:
    fig = sweep_figure(rows, keys, metric)
    return None if fig is None else save_figure(fig, path)
