"""Run plots: matplotlib (Agg) figures of one or several runs' records.

:func:`draw_plots` writes accuracy vs round and vs time, the round-duration CDF, reward
coverage, participation by device profile and bytes per round (against the LoRA baseline)
into a folder; :func:`pyplot` and :func:`save_figure` are shared with the sweep's plot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.experiments.records import RunData, num


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write ``fig`` to ``path`` as a PNG and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def _plot_accuracy(runs: Sequence[RunData], out: Path, x_key: str) -> Path | None:
    if not any(r.evals for r in runs):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in runs:
        pts = [(num(e.get(x_key)), num(e.get("mean_accuracy"))) for e in r.evals]
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
    return save_figure(fig, out / ("accuracy_vs_time.png" if is_time else "accuracy_vs_round.png"))


def _plot_duration_cdf(runs: Sequence[RunData], out: Path) -> Path | None:
    if not any(r.rounds for r in runs):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in runs:
        ds = sorted(d for d in (num(x.get("duration_s")) for x in r.rounds) if d is not None)
        if ds:
            ys = [(i + 1) / len(ds) for i in range(len(ds))]
            ax.step(ds, ys, where="post", label=r.label)
    ax.set_xlabel("round duration (s)")
    ax.set_ylabel("fraction of rounds")
    ax.set_ylim(0, 1.02)
    ax.set_title("round-duration CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out / "round_duration_cdf.png")


def _plot_coverage(runs: Sequence[RunData], out: Path) -> Path | None:
    if not any(r.rounds for r in runs):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in runs:
        pts = [(num(x.get("round")), num(x.get("coverage"))) for x in r.rounds]
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
    return save_figure(fig, out / "reward_coverage.png")


def _plot_participation(runs: Sequence[RunData], out: Path) -> Path | None:
    totals: list[dict[str, float]] = []
    for r in runs:
        t: dict[str, float] = defaultdict(float)
        for x in r.rounds:
            for profile, n in (x.get("participation") or {}).items():
                t[str(profile)] += num(n) or 0.0
        totals.append(t)
    profiles = sorted({p for t in totals for p in t})
    if not profiles:
        return None
    plt = pyplot()
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
    return save_figure(fig, out / "participation.png")


def _plot_bytes(runs: Sequence[RunData], out: Path) -> Path | None:
    if not any(r.rounds for r in runs):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    lora_drawn = False
    for r in runs:
        xs = [int(x.get("round", 0)) for x in r.rounds]
        ours = [
            max(1.0, (num(x.get("bytes_sent")) or 0) + (num(x.get("bytes_received")) or 0))
            for x in r.rounds
        ]
        lora = [max(1.0, num(x.get("lora_bytes")) or 0) for x in r.rounds]
        (line,) = ax.plot(xs, ours, label=f"{r.label}: FedGRPO scalars")
        if any(num(x.get("lora_bytes")) for x in r.rounds):
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
    return save_figure(fig, out / "bytes_per_round.png")


def draw_plots(runs: Sequence[RunData], out: Path) -> list[Path]:
    """Every plot that the runs' records allow, written into ``out``; returns the files."""
    written: list[Path | None] = [
        _plot_accuracy(runs, out, "round"),
        _plot_accuracy(runs, out, "time_s"),
        _plot_duration_cdf(runs, out),
        _plot_coverage(runs, out),
        _plot_participation(runs, out),
        _plot_bytes(runs, out),
    ]
    return [p for p in written if p is not None]
