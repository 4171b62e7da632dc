"""Write simulation results for notebooks (JSONL/CSV) and draw the standard plots (Agg)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.sim.result import SimResult

__all__ = [
    "plot_coverage_vs_dropout",
    "plot_participation",
    "plot_round_duration_cdf",
    "write_csv",
    "write_jsonl",
]

_FLAT_SKIP = ("coverage", "participation")


def write_jsonl(result: SimResult, path: str | Path) -> Path:
    """One JSON object per round (full record, incl. per-group coverage and participation)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as fh:
        for rec in result.rounds:
            fh.write(json.dumps({"seed": result.seed, **rec}, default=_jsonable) + "\n")
    return p


def write_csv(result: SimResult, path: str | Path, requests: bool = False) -> Path:
    """Flat per-round table (or the per-request rows with ``requests=True``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = (
        result.requests
        if requests
        else [{k: v for k, v in r.items() if k not in _FLAT_SKIP} for r in result.rounds]
    )
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    with p.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return p


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_round_duration_cdf(results: Mapping[str, SimResult], path: str | Path) -> Path:
    """Empirical CDF of round durations, one line per labelled result."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, res in results.items():
        d = np.sort(np.array(res.column("duration_s"), dtype=float))
        ax.step(d, np.arange(1, d.size + 1) / max(d.size, 1), where="post", label=label)
    ax.set_xlabel("round duration (virtual s)")
    ax.set_ylabel("fraction of rounds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_coverage_vs_dropout(
    dropouts: Sequence[float], series: Mapping[str, Sequence[float]], path: str | Path,
    title: str = "",
) -> Path:  # fmt: skip
    """Reward coverage (y) against per-request dropout probability (x), one line per setting."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, ys in series.items():
        ax.plot(list(dropouts), list(ys), marker="o", label=label)
    ax.set_xlabel("dropout probability per request")
    ax.set_ylabel("reward coverage (fraction of candidates)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_participation(result: SimResult, path: str | Path) -> Path:
    """Asked vs answered requests per device profile over the run."""
    plt = _plt()
    part = result.participation()
    names = sorted(part)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.bar(x - 0.2, [part[n]["asked"] for n in names], 0.4, label="asked")
    ax.bar(x + 0.2, [part[n]["answered"] for n in names], 0.4, label="answered in time")
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_ylabel("requests")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return p
