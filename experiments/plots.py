"""Run plots: matplotlib figures of one or several runs' records.

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` built without pyplot
(so a notebook's backend and pyplot's global state are left alone) on constrained layout, so
no title, tick or axis label is clipped; :func:`draw_plots` writes every plot the records
allow into a folder, :func:`save_figure` writes one. What the figures promise:

* **accuracy** (vs round and vs time): the y axis is zoomed to the data with padding, inside
  [0, 1], so a gain from 0.33 to 0.39 fills the axis instead of looking flat on 0–1; the axis
  label says when it is zoomed.
* **participation**: answered requests per device profile as **shares of the requests asked**
  over the whole run (the rest — late, failed, offline, cancelled — is its own bar), not raw
  counts, so runs of different lengths and fleets compare.
* **time**: a record's ``time_s`` is virtual seconds in ``sim`` and wall-clock seconds in
  ``emulate``/``live`` (:func:`fedgrpo.experiments.records.time_clock`); runs on different
  clocks are drawn on separate panels, each labelled with its clock, never on one axis.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgrpo.experiments.records import RunData, num, time_clock

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: how each clock is named on a time axis
CLOCK_LABELS = {
    "virtual": "virtual time (s, simulated)",
    "wall": "wall-clock time (s)",
    "unknown": "time (s; clock unknown: the run records no mode)",
}
#: ...and on a round-duration axis (emulate's durations are wall seconds / time_scale)
DURATION_LABELS = {
    "virtual": "round duration (virtual s)",
    "wall": "round duration (wall-clock s; emulate: ÷ time_scale)",
    "unknown": "round duration (s; clock unknown)",
}
ZOOMED = "axis zoomed to the data"


def pyplot() -> Any:
    """matplotlib.pyplot, on the non-interactive Agg backend unless pyplot is already in use
    (a notebook's inline backend is kept)."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def new_figure(width: float = 6.4, height: float = 4.0) -> Figure:
    """A Figure on an Agg canvas with constrained layout, outside pyplot's figure registry."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG (and close it if pyplot manages it)."""
    if fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    fig.savefig(path, dpi=110)
    if fig.canvas.manager is not None:  # a pyplot figure: free it
        pyplot().close(fig)
    return path


def data_limits(
    values: Sequence[float], bounds: tuple[float, float] = (0.0, 1.0), min_pad: float = 0.02
) -> tuple[float, float]:
    """Axis limits around ``values``: their range plus 10 % (at least ``min_pad``) on each
    side, kept inside ``bounds``. 0.33..0.39 -> (0.31, 0.41)."""
    lo, hi = min(values), max(values)
    pad = max(0.1 * (hi - lo), min_pad)
    return max(bounds[0], lo - pad), min(bounds[1], hi + pad)


def _label(r: RunData) -> str:
    return r.label or r.name


def _color(runs: Sequence[RunData], r: RunData) -> str:
    """A run's colour, the same on every panel of a figure."""
    return f"C{next(i for i, x in enumerate(runs) if x is r) % 10}"


def _legend(fig: Figure) -> None:
    """One legend under the panels (constrained layout makes room for it), so it covers no
    data, tick or axis label however long the run labels are."""
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        ncols = 1 if max(len(lab) for lab in labels) > 40 else min(3, len(labels))
        fig.legend(handles, labels, loc="outside lower center", fontsize=7, ncols=ncols)
        rows = -(-len(labels) // ncols)
        fig.set_figheight(fig.get_figheight() + 0.16 * rows)  # the panels keep their height


def _by_clock(runs: Sequence[RunData]) -> dict[str, list[RunData]]:
    groups: dict[str, list[RunData]] = {}
    for r in runs:
        groups.setdefault(time_clock(r.mode), []).append(r)
    return groups


def _accuracy_points(r: RunData, x_key: str) -> tuple[list[float], list[float]]:
    pts = [(num(e.get(x_key)), num(e.get("mean_accuracy"))) for e in r.evals]
    kept = [(x, y) for x, y in pts if x is not None and y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


def accuracy_figure(runs: Sequence[RunData], x: str = "round") -> Figure | None:
    """Mean held-out accuracy vs ``x`` (``"round"`` or ``"time"``; one panel per clock);
    None when no run has an evaluation."""
    if x not in ("round", "time"):
        raise ValueError(f"x={x!r}: use 'round' or 'time'")
    x_key = "time_s" if x == "time" else "round"
    panels = _by_clock(runs) if x == "time" else {"round": list(runs)}
    series = {k: [(r, *_accuracy_points(r, x_key)) for r in rs] for k, rs in panels.items()}
    series = {k: [s for s in v if s[1]] for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig = new_figure(6.4 if len(series) == 1 else 5.0 * len(series), 4.0)
    axes = fig.subplots(1, len(series), sharey=True, squeeze=False)[0]
    ys = [y for v in series.values() for s in v for y in s[2]]
    limits = data_limits(ys)
    zoomed = limits != (0.0, 1.0)
    for ax, (clock, members) in zip(axes, series.items()):
        for r, xs, acc in members:
            ax.plot(xs, acc, marker="o", markersize=3, label=_label(r), color=_color(runs, r))
        ax.set_xlabel("round" if x == "round" else CLOCK_LABELS[clock])
        ax.set_ylim(*limits)
        ax.grid(alpha=0.3)
    _legend(fig)
    axes[0].set_ylabel("mean accuracy" + (f"\n({ZOOMED})" if zoomed else ""))
    fig.suptitle("held-out accuracy vs " + x)
    return fig


def duration_cdf_figure(runs: Sequence[RunData]) -> Figure | None:
    """CDF of round durations, one panel per clock; None without round records."""
    panels = {k: v for k, v in _by_clock(runs).items() if any(r.rounds for r in v)}
    if not panels:
        return None
    fig = new_figure(6.4 if len(panels) == 1 else 5.0 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for ax, (clock, members) in zip(axes, panels.items()):
        for r in members:
            ds = sorted(d for d in (num(x.get("duration_s")) for x in r.rounds) if d is not None)
            if ds:
                ax.step(ds, [(i + 1) / len(ds) for i in range(len(ds))], where="post",
                        label=_label(r), color=_color(runs, r))  # fmt: skip
        ax.set_xlabel(DURATION_LABELS[clock])
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    _legend(fig)
    axes[0].set_ylabel("fraction of rounds")
    fig.suptitle("round-duration CDF")
    return fig


def coverage_figure(runs: Sequence[RunData]) -> Figure | None:
    """Fraction of candidates with at least one reward, per round."""
    if not any(r.rounds for r in runs):
        return None
    fig = new_figure()
    ax = fig.subplots()
    for r in runs:
        pts = [(num(x.get("round")), num(x.get("coverage"))) for x in r.rounds]
        kept = [(a, b) for a, b in pts if a is not None and b is not None]
        if kept:
            ax.plot([a for a, _ in kept], [b for _, b in kept], label=_label(r))
    ax.set_xlabel("round")
    ax.set_ylabel("share of candidates with >= 1 reward")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("reward coverage per round")
    ax.grid(alpha=0.3)
    _legend(fig)
    return fig


NOT_ANSWERED = "not answered"


def participation_shares(rounds: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], int]:
    """(share of the run's asked requests answered by each device profile, plus
    ``"not answered"`` for the rest; requests asked). Shares sum to 1; ({}, 0) if none asked."""
    asked = int(sum(num(r.get("asked")) or 0 for r in rounds))
    if asked <= 0:
        return {}, 0
    answered: dict[str, float] = defaultdict(float)
    for r in rounds:
        for profile, n in (r.get("participation") or {}).items():
            answered[str(profile)] += num(n) or 0.0
    shares = {p: answered[p] / asked for p in sorted(answered)}
    shares[NOT_ANSWERED] = max(0.0, 1.0 - sum(shares.values()))
    return shares, asked


def participation_figure(runs: Sequence[RunData]) -> Figure | None:
    """Per device profile, the share of the requests asked that it answered (grouped bars,
    one colour per run); None when no run asked anything."""
    drawn = [(r, *participation_shares(r.rounds)) for r in runs]
    drawn = [d for d in drawn if d[2] > 0]
    if not drawn:
        return None
    cats = [*sorted({p for _, s, _ in drawn for p in s if p != NOT_ANSWERED}), NOT_ANSWERED]
    fig = new_figure(max(6.4, 0.55 * len(cats) * len(drawn) ** 0.5 + 2.5), 4.2)
    ax = fig.subplots()
    width = 0.8 / len(drawn)
    for i, (r, shares, asked) in enumerate(drawn):
        xs = [j + (i - (len(drawn) - 1) / 2) * width for j in range(len(cats))]
        bars = ax.bar(xs, [shares.get(c, 0.0) for c in cats], width=width,
                      label=f"{_label(r)} ({asked} asked)")  # fmt: skip
        if len(cats) * len(drawn) <= 16:
            ax.bar_label(bars, fmt="{:.0%}", fontsize=7, padding=1)
    top = max(v for _, s, _ in drawn for v in s.values())
    ax.set_ylim(0, min(1.0, top * 1.15 + 0.03))
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels(cats, rotation=30, ha="right")
    ax.set_ylabel("share of requests asked")
    ax.set_title("participation by device profile (whole run)")
    ax.grid(alpha=0.3, axis="y")
    _legend(fig)
    return fig


def bytes_figure(runs: Sequence[RunData]) -> Figure | None:
    """Payload bytes per round (log scale), against what a LoRA exchange would move."""
    if not any(r.rounds for r in runs):
        return None
    fig = new_figure()
    ax = fig.subplots()
    lora_drawn = False
    for r in runs:
        xs = [int(x.get("round", 0)) for x in r.rounds]
        ours = [max(1.0, (num(x.get("bytes_sent")) or 0) + (num(x.get("bytes_received")) or 0))
                for x in r.rounds]  # fmt: skip
        (line,) = ax.plot(xs, ours, label=f"{_label(r)}: FedGRPO scalars")
        if any(num(x.get("lora_bytes")) for x in r.rounds):
            lora = [max(1.0, num(x.get("lora_bytes")) or 0) for x in r.rounds]
            ax.plot(xs, lora, linestyle="--", color=line.get_color(),
                    label=f"{_label(r)}: LoRA baseline")  # fmt: skip
            lora_drawn = True
    ax.set_yscale("log")
    ax.set_xlabel("round")
    ax.set_ylabel("bytes per round (log scale)")
    ax.set_title("communication per round" + (" vs LoRA exchange" if lora_drawn else ""))
    ax.grid(alpha=0.3, which="both")
    _legend(fig)
    return fig


def sweep_figure(
    rows: Sequence[Mapping[str, Any]], keys: Sequence[str], metric: str
) -> Figure | None:
    """A sweep's ``metric`` per grid point (mean ± std over seeds); None if nothing to draw."""
    drawn = [r for r in rows if r.get(f"{metric}_mean") is not None]
    if not drawn:
        return None
    fig = new_figure(max(6.4, 0.7 * len(drawn)), 4.2)
    ax = fig.subplots()
    numeric = len(keys) == 1 and all(
        isinstance(r[keys[0]], (int, float)) and not isinstance(r[keys[0]], bool) for r in drawn
    )
    ys = [r[f"{metric}_mean"] for r in drawn]
    errs = [r[f"{metric}_std"] or 0.0 for r in drawn]
    if numeric:
        ax.errorbar([float(r[keys[0]]) for r in drawn], ys, yerr=errs, marker="o", capsize=4)
        ax.set_xlabel(keys[0])
    else:
        ax.errorbar(range(len(drawn)), ys, yerr=errs, marker="o", linestyle="none", capsize=4)
        ax.set_xticks(range(len(drawn)))
        ax.set_xticklabels([str(r["point"]) for r in drawn], rotation=30, ha="right", fontsize=7)
        ax.set_xlabel("grid point")
    ax.set_ylabel(f"{metric}\n(mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.set_title(f"sweep: {metric}")
    return fig


PLOT_FILES = {
    "accuracy_vs_round.png": lambda runs: accuracy_figure(runs, "round"),
    "accuracy_vs_time.png": lambda runs: accuracy_figure(runs, "time"),
    "round_duration_cdf.png": duration_cdf_figure,
    "reward_coverage.png": coverage_figure,
    "participation.png": participation_figure,
    "bytes_per_round.png": bytes_figure,
}


def draw_plots(runs: Sequence[RunData], out: Path) -> list[Path]:
    """Every plot that the runs' records allow, written into ``out``; returns the files."""
    written = []
    for name, make in PLOT_FILES.items():
        fig = make(runs)
        if fig is not None:
            written.append(save_figure(fig, out / name))
    return written
