"""Run outputs: the metrics format, a crash-safe writer, plots and comparison tables.

Run directory layout (``runs/<scenario>/<timestamp>/``)::

    scenario.yaml      resolved scenario (scenarios.loader.dump_scenario)
    metrics.jsonl      one JSON object per line, appended and flushed line by line
    metrics.csv        the same records flattened, rewritten after every line (if outputs.csv)
    summary.json       written at the end (also on Ctrl-C with status "interrupted")
    checkpoints/       the runner's
    plots/             PNGs from make_report([run_dir], run_dir / "plots")

``metrics.jsonl`` lines — exactly two kinds, told apart by ``event``:

``round`` (one per finished round)::

    {"event": "round", "round": int,            # 1-based round number
     "time_s": float,          # end of the round, seconds since start (virtual in sim, wall otherwise)
     "duration_s": float,      # this round's length
     "asked": int,             # scoring requests sent (incl. over-selection and retries)
     "answered": int,          # requests answered before the deadline
     "late": int,              # answered after the deadline (discarded)
     "failed": int,            # errors / crashes
     "offline": int,           # selected clients that were unreachable
     "cancelled": int,         # cancelled once quorum was met (over-selection)
     "coverage": float,        # fraction of candidates with >= 1 reward, in [0, 1]
     "groups_with_signal": int,# question groups whose rewards vary (carry a gradient)
     "groups": int,            # question groups this round
     "loss": float | null,     # null when no group had signal
     "reward_mean": float | null,
     "bytes_sent": int, "bytes_received": int,   # server <-> clients payload bytes this round
     "lora_bytes": int,        # what a LoRA-exchanging baseline (FedPETuning) would move this round
     "wasted_device_s": float, # device seconds spent on late/cancelled/failed work
     "participation": {profile: answered_count}}

``eval`` (before round 1 with ``round`` 0, then every ``eval.every`` rounds and at the end)::

    {"event": "eval", "round": int, "time_s": float,
     "accuracy": {domain: float}, "mean_accuracy": float, "format_rate": float}

``summary.json``::

    {"scenario": str, "mode": str, "seed": int, "rounds_completed": int,
     "initial_mean_accuracy": float | null, "final_mean_accuracy": float | null,
     "best_mean_accuracy": float | null, "total_bytes": int, "lora_total_bytes": int,
     "wall_s": float, "virtual_s": float, "status": "finished" | "interrupted"}

NaN/inf floats are written as ``null``. A run that crashed without ``summary.json`` is still
reportable: :func:`run_summary` derives the summary from its metrics.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY_JSON = "summary.json"

ROUND_KEYS: tuple[str, ...] = (
    "round",
    "time_s",
    "duration_s",
    "asked",
    "answered",
    "late",
    "failed",
    "offline",
    "cancelled",
    "coverage",
    "groups_with_signal",
    "groups",
    "loss",
    "reward_mean",
    "bytes_sent",
    "bytes_received",
    "lora_bytes",
    "wasted_device_s",
    "participation",
)
EVAL_KEYS: tuple[str, ...] = ("round", "time_s", "accuracy", "mean_accuracy", "format_rate")
SUMMARY_KEYS: tuple[str, ...] = (
    "scenario",
    "mode",
    "seed",
    "rounds_completed",
    "initial_mean_accuracy",
    "final_mean_accuracy",
    "best_mean_accuracy",
    "total_bytes",
    "lora_total_bytes",
    "wall_s",
    "virtual_s",
    "status",
)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class MetricsWriter:
    """Append-only metrics for one run: JSONL flushed per line; the CSV gets each row too
    (rewritten whole only when a new column appears, e.g. a new device profile).

    ``resume_after_round=r`` (resuming from a checkpoint taken after round ``r``) drops
    records of later rounds that a crashed run wrote after its last checkpoint.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        csv: bool = True,
        resume_after_round: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / METRICS_JSONL
        self.csv_path = self.run_dir / METRICS_CSV
        self.write_csv = csv
        self.records: list[dict[str, Any]] = []
        self._csv_columns: list[str] = []
        if self.jsonl_path.exists():
            raw = self.jsonl_path.read_text(encoding="utf-8")
            self.records = parse_records(raw, self.jsonl_path)
            kept = self.records
            if resume_after_round is not None:
                kept = [r for r in self.records if int(r.get("round", 0)) <= resume_after_round]
            # rewrite when records were dropped or the last line is torn (a crash mid-write;
            # a record's newline is written with it): appending after a torn line would
            # glue the next record onto it
            if len(kept) != len(self.records) or (raw and not raw.endswith("\n")):
                self.records = kept
                _atomic_write(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fh: io.TextIOWrapper | None = self.jsonl_path.open("a", encoding="utf-8")

    def _write(self, event: str, record: Mapping[str, Any], required: Sequence[str]) -> None:
        missing = [k for k in required if k not in record]
        if missing:
            raise ValueError(f"{event} record lacks {missing}; see fedgrpo.experiments.report for the format")
        if self._fh is None:
            raise ValueError(f"MetricsWriter for {self.run_dir} is closed")
        rec = {"event": event, **_clean(dict(record))}
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        self.records.append(rec)
        if self.write_csv:
            self._rewrite_csv()

    def round(self, record: Mapping[str, Any]) -> None:
        """Append one ``round`` record (keys: ROUND_KEYS; extra keys are kept)."""
        self._write("round", record, ROUND_KEYS)

    def eval(self, record: Mapping[str, Any]) -> None:
        """Append one ``eval`` record (keys: EVAL_KEYS)."""
        self._write("eval", record, EVAL_KEYS)

    def _rewrite_csv(self) -> None:
        """Append the new row; rewrite the whole file only when a new column appears."""
        last = _flatten(self.records[-1])
        if self._csv_columns and set(last) <= set(self._csv_columns) and self.csv_path.exists():
            with self.csv_path.open("a", encoding="utf-8", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self._csv_columns, lineterminator="\n").writerow(last)
            return
        rows = [_flatten(r) for r in self.records]
        columns: list[str] = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _atomic_write(self.csv_path, buf.getvalue())
        self._csv_columns = columns

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_summary(run_dir: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json`` atomically; must hold SUMMARY_KEYS (extra keys are kept)."""
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"summary lacks {missing}; see fedgrpo.experiments.report for the format")
    path = Path(run_dir) / SUMMARY_JSON
    _atomic_write(path, json.dumps(_clean(dict(summary)), indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- reading


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (crash mid-write) is skipped."""
    return parse_records(path.read_text(encoding="utf-8"), path)


def parse_records(text: str, path: Path) -> list[dict[str, Any]]:
    """:func:`read_records` of text already read from ``path`` (named in errors)."""
    out: list[dict[str, Any]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line") from None
        if isinstance(rec, dict):
            out.append(rec)
    return out


@dataclass
class RunData:
    """Everything a report needs about one run directory."""

    path: Path
    name: str
    seed: int | None
    mode: str | None
    rounds: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    label: str = ""


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def derive_summary(
    name: str,
    mode: str | None,
    seed: int | None,
    rounds: Sequence[Mapping[str, Any]],
    evals: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A summary computed from metrics alone (for runs that died before writing one)."""
    accs = [a for a in (_num(e.get("mean_accuracy")) for e in evals) if a is not None]
    total = sum(
        int(r.get("bytes_sent", 0) or 0) + int(r.get("bytes_received", 0) or 0) for r in rounds
    )
    times = [t for t in (_num(r.get("time_s")) for r in [*rounds, *evals]) if t is not None]
    return {
        "scenario": name,
        "mode": mode,
        "seed": seed,
        "rounds_completed": max((int(r.get("round", 0)) for r in rounds), default=0),
        "initial_mean_accuracy": accs[0] if accs else None,
        "final_mean_accuracy": accs[-1] if accs else None,
        "best_mean_accuracy": max(accs) if accs else None,
        "total_bytes": total,
        "lora_total_bytes": sum(int(r.get("lora_bytes", 0) or 0) for r in rounds),
        "wall_s": None,
        "virtual_s": max(times) if times else None,
        "status": "incomplete",
    }


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: run directory not found")
    records = read_records(path / METRICS_JSONL) if (path / METRICS_JSONL).exists() else []
    summary: dict[str, Any] = {}
    if (path / SUMMARY_JSON).exists():
        summary = json.loads((path / SUMMARY_JSON).read_text(encoding="utf-8"))
    scen: dict[str, Any] = {}
    if (path / "scenario.yaml").exists():
        loaded = yaml.safe_load((path / "scenario.yaml").read_text(encoding="utf-8"))
        scen = loaded if isinstance(loaded, dict) else {}
    if not records and not summary:
        raise FileNotFoundError(
            f"{path}: no {METRICS_JSONL} or {SUMMARY_JSON}; is this a run directory?"
        )
    name = str(summary.get("scenario") or scen.get("name") or path.parent.name)
    seed = summary.get("seed", scen.get("seed"))
    mode = summary.get("mode", scen.get("mode"))
    rounds = [r for r in records if r.get("event") == "round"]
    evals = [r for r in records if r.get("event") == "eval"]
    derived = derive_summary(name, mode, seed, rounds, evals)
    merged = {**derived, **{k: v for k, v in summary.items() if v is not None or k not in derived}}
    return RunData(
        path=path, name=name, seed=seed, mode=mode, rounds=rounds, evals=evals, summary=merged
    )


def run_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """summary.json, completed from the metrics where keys are missing."""
    return load_run(run_dir).summary


def _label_runs(runs: Sequence[RunData]) -> None:
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
    v = _num(value)
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
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def summary_table(run_dirs: Iterable[str | os.PathLike[str]]) -> str:
    """Plain-text table, one row per run: accuracy before/after/best, rounds, time, bytes."""
    runs = [load_run(d) for d in run_dirs]
    _label_runs(runs)
    header = [
        "run",
        "status",
        "rounds",
        "acc start",
        "acc final",
        "acc best",
        "wall s",
        "virtual s",
        "bytes",
        "LoRA bytes",
    ]
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
    vals = [v for v in (_num(x) for x in values) if v is not None]
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


def comparison_rows(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One row per scenario name (seeds grouped): n, seeds and mean/std of COMPARISON_METRICS."""
    groups: dict[str, list[RunData]] = defaultdict(list)
    for r in runs:
        groups[r.name].append(r)
    rows = []
    for name, members in groups.items():
        row: dict[str, Any] = {
            "scenario": name,
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
    header = [
        "scenario",
        "runs",
        "seeds",
        "acc start",
        "acc final",
        "acc best",
        "wall s",
        "virtual s",
        "bytes",
        "LoRA bytes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        n = int(row["runs"])
        cells = [str(row["scenario"]), str(n), str(row["seeds"])]
        for metric in COMPARISON_METRICS:
            kind = _KINDS.get(metric, "acc")
            cells.append(_pm(row[f"{metric}_mean"], row[f"{metric}_std"], n, kind))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])
    _atomic_write(path, buf.getvalue())
    return path


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _plot_accuracy(runs: Sequence[RunData], out: Path, x_key: str) -> Path | None:
    if not any(r.evals for r in runs):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in runs:
        pts = [(_num(e.get(x_key)), _num(e.get("mean_accuracy"))) for e in r.evals]
        pts2 = [(x, y) for x, y in pts if x is not None and y is not None]
        if pts2:
            xs, ys = zip(*pts2)
            ax.plot(xs, ys, marker="o", markersize=3, label=r.label)
    is_time = x_key == "time_s"
    virtual = any(r.mode == "sim" for r in runs)
    ax.set_xlabel(("virtual time (s)" if virtual else "wall time (s)") if is_time else "round")
    ax.set_ylabel("mean accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("accuracy vs " + ("time" if is_time else "round"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / ("accuracy_vs_time.png" if is_time else "accuracy_vs_round.png"))


def _plot_duration_cdf(runs: Sequence[RunData], out: Path) -> Path | None:
    if not any(r.rounds for r in runs):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in runs:
        ds = sorted(d for d in (_num(x.get("duration_s")) for x in r.rounds) if d is not None)
        if ds:
            ys = [(i + 1) / len(ds) for i in range(len(ds))]
            ax.step(ds, ys, where="post", label=r.label)
    ax.set_xlabel("round duration (s)")
    ax.set_ylabel("fraction of rounds")
    ax.set_ylim(0, 1.02)
    ax.set_title("round-duration CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "round_duration_cdf.png")


def _plot_coverage(runs: Sequence[RunData], out: Path) -> Path | None:
    if not any(r.rounds for r in runs):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in runs:
        pts = [(_num(x.get("round")), _num(x.get("coverage"))) for x in r.rounds]
        pts2 = [(a, b) for a, b in pts if a is not None and b is not None]
        if pts2:
            xs, ys = zip(*pts2)
            ax.plot(xs, ys, label=r.label)
    ax.set_xlabel("round")
    ax.set_ylabel("candidates with >= 1 reward")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("reward coverage per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "reward_coverage.png")


def _plot_participation(runs: Sequence[RunData], out: Path) -> Path | None:
    totals: list[dict[str, float]] = []
    for r in runs:
        t: dict[str, float] = defaultdict(float)
        for x in r.rounds:
            for profile, n in (x.get("participation") or {}).items():
                t[str(profile)] += _num(n) or 0.0
        totals.append(t)
    profiles = sorted({p for t in totals for p in t})
    if not profiles:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(profiles) * max(1, len(runs)) ** 0.5), 4.0))
    width = 0.8 / len(runs)
    for i, (r, t) in enumerate(zip(runs, totals)):
        xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(profiles))]
        ax.bar(xs, [t.get(p, 0.0) for p in profiles], width=width, label=r.label)
    ax.set_xticks(range(len(profiles)))
    ax.set_xticklabels(profiles, rotation=30, ha="right")
    ax.set_ylabel("answered requests (whole run)")
    ax.set_title("participation by device profile")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _save(fig, out / "participation.png")


def _plot_bytes(runs: Sequence[RunData], out: Path) -> Path | None:
    if not any(r.rounds for r in runs):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    lora_drawn = False
    for r in runs:
        xs = [int(x.get("round", 0)) for x in r.rounds]
        ours = [
            max(1.0, (_num(x.get("bytes_sent")) or 0) + (_num(x.get("bytes_received")) or 0))
            for x in r.rounds
        ]
        lora = [max(1.0, _num(x.get("lora_bytes")) or 0) for x in r.rounds]
        (line,) = ax.plot(xs, ours, label=f"{r.label}: FedGRPO scalars")
        if any(_num(x.get("lora_bytes")) for x in r.rounds):
            ax.plot(
                xs, lora, linestyle="--", color=line.get_color(), label=f"{r.label}: LoRA baseline"
            )
            lora_drawn = True
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("bytes per round")
    ax.set_title("communication per round" + (" vs LoRA exchange" if lora_drawn else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, out / "bytes_per_round.png")


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
    written: list[Path | None] = [
        _plot_accuracy(runs, out, "round"),
        _plot_accuracy(runs, out, "time_s"),
        _plot_duration_cdf(runs, out),
        _plot_coverage(runs, out),
        _plot_participation(runs, out),
        _plot_bytes(runs, out),
    ]
    if len(runs) > 1:
        rows = comparison_rows(runs)
        md = out / "comparison.md"
        _atomic_write(md, comparison_markdown(rows))
        written += [md, write_csv(out / "comparison.csv", rows)]
    return [p for p in written if p is not None]
