"""The run plots as matplotlib objects: axis limits, labels, clocks, shares, no clipped text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedgrpo.experiments import plots
from fedgrpo.experiments.records import RunData

LONG = "quickstart (selection.selector=confidence_graph, round_policy.deadline_s=5) seed={}"


def run(mode: str | None, accs: list[float], label: str = "", profiles: int = 2) -> RunData:
    names = ["rpi4", "laptop", "phone-4g", "rpi-zero2", "jetson", "phone-wifi"][:profiles]
    rounds = [
        {"round": r, "time_s": 2.0 * r, "duration_s": 1.0 + r % 3, "asked": 16, "coverage": 0.9,
         "bytes_sent": 4000, "bytes_received": 300, "lora_bytes": 2_000_000,
         "participation": {p: 2 + i for i, p in enumerate(names)}}
        for r in range(1, 7)
    ]  # fmt: skip
    evals = [{"round": 2 * i, "time_s": 4.0 * i, "mean_accuracy": a} for i, a in enumerate(accs)]
    return RunData(Path("/runs/x"), "quickstart", 0, mode, rounds, evals, {}, label)


def test_accuracy_axis_is_zoomed_to_the_data_and_says_so() -> None:
    fig = plots.accuracy_figure([run("sim", [0.33, 0.35, 0.37, 0.39])])
    assert fig is not None
    (ax,) = fig.axes
    lo, hi = ax.get_ylim()
    assert 0.28 <= lo < 0.33 and 0.39 < hi <= 0.44
    assert (0.39 - 0.33) / (hi - lo) >= 0.5  # the gain fills most of the axis
    assert ax.get_ylabel() == "mean accuracy\n(axis zoomed to the data)"
    assert ax.get_xlabel() == "round"
    full = plots.accuracy_figure([run("sim", [0.0, 0.5, 1.0])])
    assert full is not None
    assert full.axes[0].get_ylim() == (0.0, 1.0) and full.axes[0].get_ylabel() == "mean accuracy"
    assert plots.data_limits([0.95, 0.99]) == (pytest.approx(0.93), 1.0)  # never past 1
    assert plots.accuracy_figure([run("sim", [])]) is None


def test_time_axes_never_mix_virtual_and_wall_clock_seconds() -> None:
    sim, emu, live = (
        run("sim", [0.3, 0.4], "sim"),
        run("emulate", [0.3, 0.5], "emu"),
        run("live", [0.2, 0.3], "live"),
    )
    fig = plots.accuracy_figure([sim, emu, live], x="time")
    assert fig is not None and len(fig.axes) == 2
    by_label = {ax.get_xlabel(): [ln.get_label() for ln in ax.get_lines()] for ax in fig.axes}
    assert by_label == {
        "virtual time (s, simulated)": ["sim"],
        "wall-clock time (s)": ["emu", "live"],
    }
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim()  # one accuracy scale
    colours = [ln.get_color() for ax in fig.axes for ln in ax.get_lines()]
    assert len(set(colours)) == 3  # a run keeps its own colour across panels
    cdf = plots.duration_cdf_figure([sim, emu])
    assert cdf is not None
    assert [ax.get_xlabel() for ax in cdf.axes] == [
        "round duration (virtual s)", "round duration (wall-clock s; emulate: ÷ time_scale)",
    ]  # fmt: skip
    one = plots.accuracy_figure([sim], x="time")
    assert one is not None and [ax.get_xlabel() for ax in one.axes] == [
        plots.CLOCK_LABELS["virtual"]
    ]
    unknown = plots.accuracy_figure([run(None, [0.1, 0.2])], x="time")
    assert unknown is not None and "clock unknown" in unknown.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="'round' or 'time'"):
        plots.accuracy_figure([sim], x="wall")


def test_participation_is_drawn_as_shares_of_the_requests_asked() -> None:
    r = run("sim", [0.3], "a")  # per round: 16 asked, rpi4 answered 2, laptop 3
    shares, asked = plots.participation_shares(r.rounds)
    assert asked == 96
    assert shares == pytest.approx({"rpi4": 12 / 96, "laptop": 18 / 96, "not answered": 66 / 96})
    fig = plots.participation_figure([r])
    assert fig is not None
    (ax,) = fig.axes
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["laptop", "rpi4", "not answered"]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([18 / 96, 12 / 96, 66 / 96])
    assert ax.get_ylabel() == "share of requests asked"
    assert ax.get_ylim()[0] == 0 and 66 / 96 < ax.get_ylim()[1] <= 1.0
    assert plots.participation_figure([RunData(Path("."), "x", 0, "sim")]) is None


def _outside(fig: Any) -> list[str]:
    """What was drawn beyond the figure's edges: the axes (with their ticks, labels, legends)
    and figure texts whose drawn extent crosses the canvas."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    artists = [*fig.axes, *fig.texts, *fig.legends]
    if fig._suptitle is not None:
        artists.append(fig._suptitle)
    bad = []
    for a in artists:
        bb = a.get_tightbbox(renderer)
        if bb is None:
            continue
        if bb.x0 < box.x0 - 1 or bb.y0 < box.y0 - 1 or bb.x1 > box.x1 + 1 or bb.y1 > box.y1 + 1:
            bad.append(repr(a))
    return bad


def test_the_clipping_check_sees_a_clipped_label() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))  # no layout engine: a long label runs off the canvas
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["a", "a very long device profile name"], rotation=30, ha="right")
    ax.set_ylabel("a y label far too long for a figure this small")
    assert _outside(fig)


def test_no_label_is_clipped() -> None:
    runs = [run(m, [0.33, 0.36, 0.39], LONG.format(i), profiles=6)
            for i, m in enumerate(["sim", "sim", "emulate"])]  # fmt: skip
    figures = {name: make(runs) for name, make in plots.PLOT_FILES.items()}
    rows = [{"point": f"selection.selector=random, sim.dropout.fail={f}", "sim.dropout.fail": f,
             "selection.selector": "random", "virtual_s_mean": 10 + f, "virtual_s_std": 1.0}
            for f in (0.0, 0.1, 0.3)]  # fmt: skip
    figures["sweep"] = plots.sweep_figure(
        rows, ["selection.selector", "sim.dropout.fail"], "virtual_s"
    )
    for name, fig in figures.items():
        assert fig is not None, name
        assert _outside(fig) == [], name
        renderer = fig.canvas.get_renderer()
        for legend in fig.legends:  # the legend covers no panel, tick or axis label
            box = legend.get_window_extent(renderer)
            assert not any(box.overlaps(ax.get_tightbbox(renderer)) for ax in fig.axes), name
