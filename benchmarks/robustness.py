"""Byzantine experts and private rewards: held-out accuracy gain of FedGRPO on the tiny zoo
for attack x fraction x aggregator, and versus the privacy epsilon, over seeds.

Every row is the quickstart (5 simulated clients, one per domain, confidence graph) shortened
to ``--rounds`` rounds with ``selection.M=3`` experts per question (the M >= 2f + 1 guidance
for one Byzantine client among five), evaluated greedily on ``--per-domain`` test items per
domain before and after. ``kept`` = the row's mean gain / the honest mean-aggregation row's
mean gain (the issue's target: >= 0.90 for trust with 20 % inverted experts).

Writes benchmarks/results/robustness.{md,json} (machine, versions, seeds, wall time) and the
accuracy-vs-epsilon plot docs/img/robustness_epsilon.png.

    nice -n 10 python benchmarks/robustness.py            # the default grid, 3 seeds
    python benchmarks/robustness.py --seeds 1 --rounds 4  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_model, versions  # noqa: E402

QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
G0 = "clients.groups.0"


@dataclass(frozen=True)
class Row:
    name: str
    attack: str = "honest"
    fraction: float = 0.0
    aggregator: str = "mean"
    mechanism: str = "none"
    epsilon: float | None = None
    extra: tuple[str, ...] = ()

    def overrides(self) -> list[str]:
        out = [f"server.grpo.reward_combine={self.aggregator}", *self.extra]
        if self.attack != "honest":
            out += [f"{G0}.behaviour.kind={self.attack}", f"{G0}.behaviour.fraction={self.fraction}"]
            if self.attack == "colluding":
                out.append(f"{G0}.behaviour.target=\\+")
        if self.mechanism != "none":
            out += [f"{G0}.privacy.mechanism={self.mechanism}", f"{G0}.privacy.epsilon={self.epsilon}"]
        return out


ATTACKS = [
    Row("honest-mean"),
    *(Row(f"inverted-0.2-{a}", "inverted", 0.2, a) for a in ("mean", "median", "trust")),
    # ablation: the probe excludes the liar but does not calibrate it (read as 1 - r)
    Row("inverted-0.2-trust-noflip", "inverted", 0.2, "trust", extra=("server.trust.flip_below=0",)),
    Row("honest-trust", aggregator="trust"),  # what trust costs when nobody lies
]
EPSILONS = [
    Row(f"rr-eps{e:g}-mean", mechanism="randomised_response", epsilon=e)
    for e in (0.5, 1.0, 2.0, 3.0, 5.0)
]
FULL = [
    *(Row(f"{k}-0.2-{a}", k, 0.2, a) for k in ("random", "always_approve", "colluding",
      "small_shift") for a in ("mean", "trust")),
    *(Row(f"inverted-0.4-{a}", "inverted", 0.4, a) for a in ("mean", "median", "trust")),
    *(Row(f"laplace-eps{e:g}-mean", mechanism="laplace", epsilon=e) for e in (1.0, 3.0)),
]  # fmt: skip


def _scenario(row: Row, seed: int, rounds: int, per_domain: int) -> Any:
    from fedgrpo.scenarios.loader import load_scenario

    sets = [
        *row.overrides(), f"seed={seed}", f"rounds={rounds}", "selection.M=3",
        f"eval.per_domain={per_domain}", "eval.every=0", "checkpoint.every=0",
        "outputs.progress=false", "outputs.plots=false", "outputs.save_model=false",
    ]  # fmt: skip
    return load_scenario(QUICKSTART, sets)


def run_one(
    row: Row, seed: int, rounds: int, per_domain: int, out: str, cached_only: bool = False
) -> dict[str, Any] | None:
    import math

    import torch

    from fedgrpo.experiments.runner import run_scenario

    torch.set_num_threads(1)
    run_dir = Path(out) / f"{row.name}-r{rounds}-d{per_domain}-s{seed}"
    done = run_dir / "summary.json"
    if done.exists() and json.loads(done.read_text()).get("status") == "finished":
        summary = json.loads(done.read_text())  # --cache: a finished run is reused
    elif cached_only:
        return None
    else:
        summary = run_scenario(_scenario(row, seed, rounds, per_domain), run_dir)
    rounds_out = run_dir / "metrics.jsonl"
    lines = [json.loads(x) for x in rounds_out.read_text().splitlines() if x.strip()]
    losses = [r["loss"] for r in lines if r.get("event") == "round" and r.get("loss") is not None]
    evals = [r for r in lines if r.get("event") == "eval"]
    first, last = evals[0]["accuracy"], evals[-1]["accuracy"]
    return {
        "row": row.name,
        "seed": seed,
        "initial": summary["initial_mean_accuracy"],
        "final": summary["final_mean_accuracy"],
        "wall_s": summary["wall_s"],
        "nan_losses": sum(1 for x in losses if not math.isfinite(x)),
        "trust_weights": summary.get("final_trust_weights"),
        "behaviours": summary.get("behaviours"),
        "domain_gain": {d: last[d] - first[d] for d in first},
        "epsilon_spent_max": max((p["epsilon"] for p in summary.get("privacy", [])), default=None),
    }


def summarise(rows: list[Row], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per row: gain mean ± std over its finished seeds, kept vs honest-mean."""
    by = {r.name: [x for x in results if x["row"] == r.name] for r in rows}
    honest = [x["final"] - x["initial"] for x in by.get("honest-mean", [])]
    base = statistics.mean(honest) if honest else None
    table = []
    held = ["add", "sub", "mul", "mod", "sort"]  # client k holds the quickstart's domain k
    for r in rows:
        gains = [x["final"] - x["initial"] for x in by[r.name]]
        mean = statistics.mean(gains)
        table.append({
            "row": r.name, "attack": r.attack, "fraction": r.fraction, "aggregator": r.aggregator,
            "mechanism": r.mechanism, "epsilon": r.epsilon,
            "gain_mean": mean, "gain_std": statistics.pstdev(gains), "gains": gains,
            "kept": (mean / base) if base else None,
            "final_mean": statistics.mean(x["final"] for x in by[r.name]),
            "nan_losses": sum(x["nan_losses"] for x in by[r.name]),
            "trust_weights": [x["trust_weights"] for x in by[r.name]],
            "behaviours": by[r.name][0]["behaviours"],
            "behaviours_by_seed": [x["behaviours"] for x in by[r.name]],
            "epsilon_spent_max": by[r.name][0]["epsilon_spent_max"],
            "wall_s": statistics.mean(x["wall_s"] for x in by[r.name]),
            "seeds": [x["seed"] for x in by[r.name]],
            "domain_gain": {d: statistics.mean(x["domain_gain"][d] for x in by[r.name])
                            for d in by[r.name][0]["domain_gain"]},
            "attacked": sorted({held[k % 5] for k, b in enumerate(by[r.name][0]["behaviours"] or [])
                                if b != "honest"}),
        })  # fmt: skip
    return table


def write_markdown(path: Path, table: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    v = ", ".join(f"{k} {x}" for k, x in meta["versions"].items())
    lines = [
        "# Robustness: held-out accuracy gain under Byzantine experts and private rewards",
        "",
        f"Machine: {meta['machine']}; {meta['cores']} cores. Versions: {v}. Seeds: "
        f"{meta['seeds']}{' (partial: each row lists its finished seeds)' if meta['partial'] else ''}. Rounds {meta['rounds']}, M = 3, {meta['per_domain']} test items per "
        f"domain. Total wall time {meta['wall_s']:.0f} s.",
        "",
        "| row | attack | fraction | aggregator | privacy | seeds | gain (points) mean ± std | "
        "kept vs honest | gain per domain (points) | NaN losses | final trust weights (first seed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        priv = "none" if t["mechanism"] == "none" else f"{t['mechanism']} ε={t['epsilon']:g}"
        kept = "" if t["kept"] is None else f"{100 * t['kept']:.0f} %"
        dom = " ".join(f"{d}{'*' if d in t['attacked'] else ''} {100 * g:+.0f}"
                       for d, g in t["domain_gain"].items())  # fmt: skip
        tw = t["trust_weights"][0]
        tw_s = "" if tw is None else " ".join(f"{w:.2f}" for w in tw)
        lines.append(
            f"| {t['row']} | {t['attack']} | {t['fraction']:g} | {t['aggregator']} | {priv} | "
            f"{','.join(map(str, t['seeds']))} | "
            f"{100 * t['gain_mean']:+.1f} ± {100 * t['gain_std']:.1f} | {kept} | "
            f"{dom} | {t['nan_losses']} | {tw_s} |"
        )
    lines += ["", "`*` = the domain whose expert lies in the first seed (client k holds domain k); "
              "each seed draws its own liars (`behaviours_by_seed` in the JSON)."]
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, table: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    honest = next((t for t in table if t["row"] == "honest-mean"), None)
    series = {
        m: sorted(((t["epsilon"], t) for t in table if t["mechanism"] == m), key=lambda x: x[0])
        for m in ("randomised_response", "laplace")
    }
    if not series["randomised_response"] or honest is None:
        return
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for m, pts in series.items():
        if not pts:
            continue
        xs = [e for e, _ in pts]
        ax.errorbar(xs, [100 * t["gain_mean"] for _, t in pts],
                    [100 * t["gain_std"] for _, t in pts], marker="o", capsize=3,
                    label=f"{m.replace('_', ' ')} (debiased), mean")  # fmt: skip
    ax.axhline(100 * honest["gain_mean"], color="grey", ls="--", label="no privacy")
    ax.set_xlabel("ε per reward")
    ax.set_ylabel("held-out accuracy gain (points)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--per-domain", type=int, default=40)
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep run directories here and reuse finished ones (default: a temp dir)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report-only", action="store_true",
                    help="only tabulate the finished runs in --cache (seeds that finished)")
    ap.add_argument("--full", action="store_true", help="every attack, 40 %% inverted, Laplace")
    ap.add_argument("--rows", default=None,
                    help="comma-separated row names to run (default: the whole grid)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "robustness_epsilon.png")
    args = ap.parse_args(argv)
    rows = ATTACKS + EPSILONS + (FULL if args.full else [])
    if args.rows:
        wanted = args.rows.split(",")
        unknown = sorted(set(wanted) - {r.name for r in rows})
        if unknown:
            ap.error(f"--rows: unknown {', '.join(unknown)}; known: {', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in wanted]
    start = time.perf_counter()
    jobs = [(r, seed) for seed in range(args.seeds) for r in rows]
    results: list[dict[str, Any]] = []
    if args.report_only and args.cache:
        got = [run_one(r, s, args.rounds, args.per_domain, str(args.cache), True) for r, s in jobs]
        results = [x for x in got if x is not None]
        rows = [r for r in rows if any(x["row"] == r.name for x in results)]
        complete = all(sum(x["row"] == r.name for x in results) == args.seeds for r in rows)
        return _write(args, rows, results, start, partial=not complete)
    from fedgrpo.experiments.context import build_context, load_scorers

    load_scorers(build_context(_scenario(rows[0], 0, args.rounds, args.per_domain)))  # zoo once
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp_dir, ProcessPoolExecutor(
        max_workers=args.workers, mp_context=get_context("spawn")
    ) as pool:
        tmp = str(args.cache or tmp_dir)
        futs = [pool.submit(run_one, r, s, args.rounds, args.per_domain, tmp) for r, s in jobs]
        for (r, seed), fut in zip(jobs, futs):
            res = fut.result()
            results.append(res)
            print(f"[robustness] {r.name} seed {seed}: {res['initial']:.3f} -> {res['final']:.3f} "
                  f"in {res['wall_s']:.0f}s", flush=True)  # fmt: skip
    return _write(args, rows, results, start, partial=False)


def _write(
    args: Any, rows: list[Row], results: list[dict[str, Any]], start: float, partial: bool
) -> int:
    table = summarise(rows, results)
    meta = {
        "machine": cpu_model(), "cores": os.cpu_count(), "versions": versions("torch", "transformers", "onnxruntime", "numpy", "dp-accounting"),
        "seeds": list(range(args.seeds)), "rounds": args.rounds, "per_domain": args.per_domain,
        # report-only: the runs' own wall time (summed), else this invocation's
        "wall_s": sum(x["wall_s"] for x in results) if args.report_only else time.perf_counter() - start,
        "partial": partial,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.json").write_text(json.dumps({"meta": meta, "rows": table}, indent=2))
    write_markdown(args.out / "robustness.md", table, meta)
    plot(args.plot, table)
    print((args.out / "robustness.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
