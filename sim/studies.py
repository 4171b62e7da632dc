"""Ready-made stragglers/dropouts studies; ``python -m fedgrpo.sim.studies`` regenerates the README plots.

* :func:`coverage_vs_dropout`: reward coverage as the per-request dropout probability grows,
  for several over-selection counts (extra experts per question on top of M = 2).
* :func:`duration_by_over_selection`: round-duration distributions for the same settings.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedgrpo.rounds import RoundPolicy
from fedgrpo.sim.config import ClientSpec, SimConfig, WorkloadSpec
from fedgrpo.sim.devices import get_profile
from fedgrpo.sim.engine import SimResult, run_simulation
from fedgrpo.sim.report import plot_coverage_vs_dropout, plot_round_duration_cdf

__all__ = ["coverage_vs_dropout", "duration_by_over_selection"]

MIX = ("rpi4", "rpi5", "phone-4g", "phone-wifi", "laptop")


def _config(
    num_clients: int, dropout: float, over: int, deadline_s: float, seed: int
) -> SimConfig:
    base = SimConfig.mixed(num_clients, list(MIX), seed=seed)
    clients = tuple(
        ClientSpec(profile=get_profile(c.profile, crash_prob=dropout), size_class="135m")
        for c in base.clients
    )
    return SimConfig(
        clients,
        policy=RoundPolicy(deadline_s=deadline_s, over_selection=over, max_retries=0),
        workload=WorkloadSpec(questions_per_round=max(1, num_clients // 8)),
    )


def coverage_vs_dropout(
    dropouts: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4),
    over_selection: Sequence[int] = (0, 1, 2),
    num_clients: int = 200,
    rounds: int = 20,
    deadline_s: float = 10.0,
    seed: int = 0,
) -> dict[str, list[float]]:
    """{label: mean coverage per dropout}; dropout = per-request crash probability on top of
    each profile's own on/off availability."""
    out: dict[str, list[float]] = {}
    for f in over_selection:
        ys = []
        for p in dropouts:
            res = run_simulation(_config(num_clients, p, f, deadline_s, seed), rounds, seed=seed)
            ys.append(float(np.mean(res.column("coverage_mean"))))
        out[f"M = 2, +{f} extra"] = ys
    return out


def duration_by_over_selection(
    over_selection: Sequence[int] = (0, 1, 2),
    dropout: float = 0.1,
    num_clients: int = 200,
    rounds: int = 40,
    deadline_s: float = 10.0,
    seed: int = 0,
) -> dict[str, SimResult]:
    return {
        f"M = 2, +{f} extra": run_simulation(
            _config(num_clients, dropout, f, deadline_s, seed), rounds, seed=seed
        )
        for f in over_selection
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", type=Path, default=Path("docs/img"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    dropouts = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4)
    series = coverage_vs_dropout(dropouts, seed=args.seed)
    p1 = plot_coverage_vs_dropout(
        dropouts,
        series,
        args.out_dir / "sim_coverage_vs_dropout.png",
        title="200 clients (Pi 4/5, phones, laptops), deadline 10 s, split M=2, G=8",
    )
    p2 = plot_round_duration_cdf(
        duration_by_over_selection(seed=args.seed), args.out_dir / "sim_round_duration_cdf.png"
    )
    for label, ys in series.items():
        print(label, " ".join(f"{y:.3f}" for y in ys))
    print(p1, p2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
