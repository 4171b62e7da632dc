"""Run records: the metrics format, a crash-safe writer, readers and run summaries.

Run directory layout (``runs/<scenario>/<timestamp>/``)::

    scenario.yaml      resolved scenario (scenarios.loader.dump_scenario)
    metrics.jsonl      one JSON object per line, appended and flushed line by line
    metrics.csv        the same records flattened, rewritten after every line (if outputs.csv)
    summary.json       written at the end (also on Ctrl-C with status "interrupted")
    checkpoints/       the runner's
    plots/             PNGs from fedgrpo.experiments.report.make_report([run_dir])

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
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
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


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``a.b``); lists as JSON cells (see :func:`_cell`)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = _cell(value) if isinstance(value, (list, tuple)) else value
    return out


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step (write a sibling .tmp, then rename)."""
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
                atomic_write(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fh: io.TextIOWrapper | None = self.jsonl_path.open("a", encoding="utf-8")

    def _write(self, event: str, record: Mapping[str, Any], required: Sequence[str]) -> None:
        missing = [k for k in required if k not in record]
        if missing:
            raise ValueError(
                f"{event} record lacks {missing}; see fedgrpo.experiments.records for the format"
            )
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
        last = flatten(self.records[-1])
        if self._csv_columns and set(last) <= set(self._csv_columns) and self.csv_path.exists():
            with self.csv_path.open("a", encoding="utf-8", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self._csv_columns, lineterminator="\n").writerow(last)
            return
        rows = [flatten(r) for r in self.records]
        columns: list[str] = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.csv_path, buf.getvalue())
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
        raise ValueError(f"summary lacks {missing}; see fedgrpo.experiments.records for the format")
    path = Path(run_dir) / SUMMARY_JSON
    atomic_write(path, json.dumps(_clean(dict(summary)), indent=2) + "\n")
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
    # the resolved scenario as the run wrote it (scenario.yaml); reports group runs whose
    # config differs only in the seed
    config: dict[str, Any] = field(default_factory=dict)


def time_clock(mode: str | None) -> str:
    """The clock of a run's ``time_s``: ``"virtual"`` (sim), ``"wall"`` (emulate, live) or
    ``"unknown"`` (no mode recorded). Times on different clocks never share an axis."""
    if mode == "sim":
        return "virtual"
    return "wall" if mode in ("emulate", "live") else "unknown"


def num(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, bool, non-numeric, NaN/inf)."""
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
    accs = [a for a in (num(e.get("mean_accuracy")) for e in evals) if a is not None]
    total = sum(
        int(r.get("bytes_sent", 0) or 0) + int(r.get("bytes_received", 0) or 0) for r in rounds
    )
    times = [t for t in (num(r.get("time_s")) for r in [*rounds, *evals]) if t is not None]
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
    """Metrics, summary (completed from the metrics) and scenario identity of one run directory."""
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
        path=path, name=name, seed=seed, mode=mode, rounds=rounds, evals=evals, summary=merged,
        config=scen,
    )  # fmt: skip


def run_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """summary.json, completed from the metrics where keys are missing."""
    return load_run(run_dir).summary


def _cell(value: Any) -> Any:
    """None as empty; lists and dicts as JSON (``json.loads`` reads them back, and pandas
    keeps them as text instead of parsing ``0101`` as the number 101)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Rows as a CSV (columns in first-seen order; see :func:`_cell`), written atomically."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: _cell(v) for k, v in row.items()} for row in rows])
    atomic_write(path, buf.getvalue())
    return path
