"""Reports over run directories: labelled runs, text and Markdown tables, plots on disk.

:func:`summary_table` is the one-row-per-run text table ``fedgrpo run`` and ``fedgrpo report``
print; :func:`before_after_text` the per-domain accuracy before/after a run;
:func:`make_report` draws the plots (:mod:`fedgrpo.experiments.plots`) and, for several runs,
writes ``comparison.md|csv`` with the seeds of one resolved config grouped (mean ± std;
runs that differ in anything but the seed, e.g. by ``--set``, are separate rows; failed and
empty runs are left out with a note). The files a run
writes and their format are in :mod:`fedgrpo.experiments.records`.
"""

from __future__ import annotations

import datetime as _dt
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fedgrpo.experiments.plots import draw_plots
from fedgrpo.experiments.records import RunData, atomic_write, flatten, load_run, num, write_csv


def _label_runs(runs: Sequence[RunData]) -> None:
    """Set each run's plot/table label: its name, plus seed (and folder) where names repeat."""
    counts: dict[str, int] = defaultdict(int)
    for r in runs:
        counts[r.name] += 1
    seen: dict[tuple[str, Any], int] = defaultdict(int)
    for r in runs:
        if counts[r.name] == 1:
            r.label = r.name
        else:
            seen[(r.name, r.seed)] += 1
            r.label = f"{r.name} seed={r.seed}"
            if seen[(r.name, r.seed)] > 1:
                r.label += f" ({r.path.name})"


# --------------------------------------------------------------------------- tables


def _fmt(value: Any, kind: str = "g") -> str:
    v = num(value)
    if v is None:
        return "-"
    if kind == "acc":
        return f"{v:.3f}"
    if kind == "s":
        return f"{v:.1f}"
    if kind == "bytes":
        return human_bytes(v)
    return f"{v:g}"


def human_bytes(n: float) -> str:
    """``n`` bytes in B / KB / MB / GB (powers of 1000), e.g. ``4.3 KB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned plain-text columns under a dashed header rule."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


#: the result columns of both tables (one run per row, or one scenario's runs per row)
RESULT_COLUMNS = (
    "acc start", "acc final", "acc best", "wall s", "virtual s", "bytes", "LoRA bytes",
)  # fmt: skip


def summary_table(run_dirs: Iterable[str | os.PathLike[str]]) -> str:
    """Plain-text table, one row per run: accuracy before/after/best, rounds, time, bytes."""
    runs = [load_run(d) for d in run_dirs]
    _label_runs(runs)
    header = ["run", "status", "rounds", *RESULT_COLUMNS]
    rows = []
    for r in runs:
        s = r.summary
        rows.append(
            [
                r.label,
                str(s.get("status", "-")),
                str(s.get("rounds_completed", "-")),
                _fmt(s.get("initial_mean_accuracy"), "acc"),
                _fmt(s.get("final_mean_accuracy"), "acc"),
                _fmt(s.get("best_mean_accuracy"), "acc"),
                _fmt(s.get("wall_s"), "s"),
                _fmt(s.get("virtual_s"), "s"),
                _fmt(s.get("total_bytes"), "bytes"),
                _fmt(s.get("lora_total_bytes"), "bytes"),
            ]
        )
    return _text_table(header, rows)


def before_after_text(summary: dict[str, Any]) -> str:
    """Held-out accuracy per domain at the first and last evaluation, and whether the change
    is beyond the evaluation's noise (paired sign test on the same items)."""
    first, last = summary.get("initial_accuracy"), summary.get("final_accuracy")
    if not first or not last:
        return "no evaluation recorded"
    domains = list(first)
    header = ["held-out greedy accuracy", *domains, "mean", "format"]
    rows = [
        [label, *(f"{acc.get(d, float('nan')):.2f}" for d in domains), f"{mean:.3f}", f"{fmt:.2f}"]
        for label, acc, mean, fmt in (
            (
                "before (round 0)",
                first,
                summary["initial_mean_accuracy"],
                summary.get("initial_format_rate") or 0.0,
            ),
            (
                f"after (round {summary.get('rounds_completed')})",
                last,
                summary["final_mean_accuracy"],
                summary.get("final_format_rate") or 0.0,
            ),
        )
    ]
    text = _text_table(header, rows)
    change = summary.get("accuracy_change")
    if change:
        verdict = (
            "beyond evaluation noise"
            if change["significant_at_0.05"]
            else "within evaluation noise"
        )
        text += (
            f"\npaired sign test on {change['items']} test items: {change['gained']} gained, "
            f"{change['lost']} lost, one-sided p = {change['p_value']:.3g} ({verdict})"
        )
    return text


COMPARISON_METRICS: tuple[str, ...] = (
    "initial_mean_accuracy",
    "final_mean_accuracy",
    "best_mean_accuracy",
    "wall_s",
    "virtual_s",
    "total_bytes",
    "lora_total_bytes",
)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std, n) over the non-missing values; std is 0.0 for one value."""
    vals = [v for v in (num(x) for x in values) if v is not None]
    if not vals:
        return None, None, 0
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), std, len(vals)


def _pm(mean: float | None, std: float | None, n: int, kind: str) -> str:
    if mean is None:
        return "-"
    if n <= 1:
        return _fmt(mean, kind)
    return f"{_fmt(mean, kind)} ± {_fmt(std, kind)}"


def _config_groups(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    """Runs grouped by resolved config minus the seed; a group's label is the scenario name,
    plus the settings that tell it apart from the name's other configs (``--set`` variants)."""
    by_config: dict[str, list[RunData]] = defaultdict(list)
    flat: dict[str, dict[str, Any]] = {}
    for r in runs:
        cfg = {k: v for k, v in flatten(r.config).items() if k not in ("seed", "description")}
        key = repr(sorted(cfg.items(), key=lambda kv: kv[0]))
        flat.setdefault(key, cfg)
        by_config[key].append(r)
    names: dict[str, list[str]] = defaultdict(list)
    for key, members in by_config.items():
        names[members[0].name].append(key)
    groups: dict[str, list[RunData]] = {}
    for key, members in by_config.items():
        siblings = names[members[0].name]
        label = members[0].name
        if len(siblings) > 1:
            others = [flat[k] for k in siblings if k != key]
            differ = sorted({p for o in others for p in set(o) | set(flat[key])
                             if o.get(p) != flat[key].get(p)})  # fmt: skip
            label += " (" + ", ".join(f"{p}={flat[key].get(p)}" for p in differ[:3]) + ")"
        groups[label] = members
    return groups


def usable(runs: Sequence[RunData]) -> tuple[list[RunData], list[str]]:
    """Runs that completed rounds, and one note per run left out (failed or empty)."""
    kept, notes = [], []
    for r in runs:
        status, done = r.summary.get("status"), r.summary.get("rounds_completed") or len(r.rounds)
        if status == "failed" or not done:
            why = f"failed: {r.summary.get('error')}" if status == "failed" else "no rounds"
            notes.append(f"skipped {r.path} ({why})")
        else:
            kept.append(r)
    return kept, notes


def comparison_rows(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One row per resolved config (seeds grouped; failed and empty runs left out, see
    :func:`usable`): n, seeds and mean/std of COMPARISON_METRICS."""
    rows = []
    for label, members in _config_groups(usable(runs)[0]).items():
        row: dict[str, Any] = {
            "scenario": label,
            "runs": len(members),
            "seeds": " ".join(str(m.seed) for m in members),
        }
        for metric in COMPARISON_METRICS:
            mean, std, _n = mean_std([m.summary.get(metric) for m in members])
            row[f"{metric}_mean"] = mean
            row[f"{metric}_std"] = std
        rows.append(row)
    return rows


_KINDS = {"wall_s": "s", "virtual_s": "s", "total_bytes": "bytes", "lora_total_bytes": "bytes"}


def comparison_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """:func:`comparison_rows` as a Markdown table (mean ± std where a scenario has several runs)."""
    header = ["scenario", "runs", "seeds", *RESULT_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        n = int(row["runs"])
        cells = [str(row["scenario"]), str(n), str(row["seeds"])]
        for metric in COMPARISON_METRICS:
            kind = _KINDS.get(metric, "acc")
            cells.append(_pm(row[f"{metric}_mean"], row[f"{metric}_std"], n, kind))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def make_report(
    run_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Draw the plots (and, for several runs, the comparison tables) into ``out_dir``.

    ``out_dir`` defaults to ``<run>/plots`` for one run and to
    ``<common parent of the runs>/comparison-<timestamp>`` for several. Returns the files written.
    """
    if not run_dirs:
        raise ValueError("make_report needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    _label_runs(runs)
    if out_dir is not None:
        out = Path(out_dir)
    elif len(runs) == 1:
        out = runs[0].path / "plots"
    else:
        common = Path(os.path.commonpath([str(r.path.resolve()) for r in runs]))
        out = common / f"comparison-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    written = draw_plots(runs, out)
    if len(runs) > 1:
        rows = comparison_rows(runs)
        md = out / "comparison.md"
        notes = "".join(f"\n* {n}" for n in usable(runs)[1])
        atomic_write(md, comparison_markdown(rows) + (f"\nLeft out:{notes}\n" if notes else ""))
        written += [md, write_csv(out / "comparison.csv", rows)]
    return written
