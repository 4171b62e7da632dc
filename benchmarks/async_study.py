"""Asynchronous FedGRPO under stragglers (issue 14): accuracy vs virtual hours.

Runs ``scenarios/async-staleness.yaml`` (model in the loop, sim mode: 5 phones + 5 Pi Zero 2
slowed 8x, one of each per domain) under three conditions, for ``--seeds`` seeds each:

* ``sync``: synchronous rounds that wait for the stragglers (``async: false``, deadline 60 s);
* ``async-none``: 6 s asynchronous rounds, late groups used as if on-policy (no correction);
* ``async-is``: the same with the decoupled truncated-IS loss (``correction: truncated_is``).

``--summarise FILE`` redoes the tables and the plot from a saved ``async_study.json``.

Per run it reads the eval records (held-out mean accuracy at virtual time ``time_s``) and
per condition reports the final accuracy (mean ± std over seeds), the virtual time, and for the
async conditions the first virtual time from which a seed's run stays at (see
:func:`time_to_reach`) the *same seed's* synchronous final accuracy, as a fraction of the synchronous run's virtual time (the target:
<= 0.6 for async-is, with no loss of final accuracy beyond noise). Also totals of the late-reward
records (stale groups used / dropped, staleness histogram, mean ESS).

    nice -n 10 .venv/bin/python benchmarks/async_study.py       # -> benchmarks/results/async_study.{md,json}
    .venv/bin/python benchmarks/async_study.py --seeds 1 --sync-rounds 3 --async-rounds 3  # smoke
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
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model, versions  # noqa: E402  (benchmarks/, the script's own folder)

RESULTS = ROOT / "benchmarks" / "results"
SCENARIO = ROOT / "scenarios" / "async-staleness.yaml"
CONDITIONS: dict[str, list[str]] = {
    "sync": ["round_policy.async=false", "round_policy.deadline_s=60"],
    "async-none": ["round_policy.correction=none"],
    "async-is": ["round_policy.correction=truncated_is"],
}
TARGET_RATIO = 0.6


def _overrides(args: argparse.Namespace, condition: str, seed: int) -> list[str]:
    rounds = args.sync_rounds if condition == "sync" else args.async_rounds
    return [
        *CONDITIONS[condition],
        f"seed={seed}",
        f"rounds={rounds}",
        f"eval.every={args.eval_every}",
        f"eval.per_domain={args.per_domain}",
        f"server.grpo.questions_per_round={args.questions}",
        f"server.grpo.lr={args.lr}",
        f"selection.aux_size={args.aux}",
        f"selection.L={min(20, args.aux // 4)}",
        "checkpoint.every=0",
        "outputs.progress=false",
        "outputs.plots=false",
        "outputs.save_model=false",
        "outputs.csv=false",
    ]


def run_one(condition: str, seed: int, sets: list[str], tmp: str) -> dict[str, Any]:
    """One run in a fresh process: its eval curve and late-reward totals."""
    import torch

    from fedgrpo.experiments.runner import run_scenario
    from fedgrpo.scenarios.loader import load_scenario

    torch.set_num_threads(1)
    start = time.perf_counter()
    run_dir = Path(tmp) / f"{condition}-{seed}"
    summary = run_scenario(load_scenario(SCENARIO, sets), run_dir)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(float(r["time_s"]), float(r["mean_accuracy"])) for r in records if r.get("event") == "eval"]
    rounds = [r for r in records if r.get("event") == "round"]
    hist: dict[str, int] = {}
    for r in rounds:
        for k, v in (r.get("staleness_hist") or {}).items():
            hist[k] = hist.get(k, 0) + int(v)
    ess = [r["grpo_ess"] for r in rounds if r.get("grpo_ess") is not None and r.get("stale_groups_used")]
    return {
        "condition": condition,
        "seed": seed,
        "status": summary["status"],
        "curve": evals,
        "virtual_s": float(summary["virtual_s"]),
        "rounds": len(rounds),
        "updates": sum(1 for r in rounds if r.get("updated")),
        "late_rewards": sum(int(r.get("late_rewards") or 0) for r in rounds),
        "stale_groups_used": sum(int(r.get("stale_groups_used") or 0) for r in rounds),
        "stale_groups_dropped": sum(int(r.get("stale_groups_dropped") or 0) for r in rounds),
        "staleness_hist": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        "ess_mean": statistics.fmean(ess) if ess else None,
        "answered_per_round": statistics.fmean(r["answered"] for r in rounds) if rounds else 0.0,
        "wall_s": time.perf_counter() - start,
    }


def time_to_reach(curve: list[tuple[float, float]], level: float) -> float | None:
    """First virtual time from which the run *stays* at ``level``: the earliest eval whose
    accuracy averaged with every later eval of the run is >= ``level`` (None if never). One
    lucky eval does not count, and neither does a level the run falls back from."""
    for i, (t, _acc) in enumerate(curve):
        rest = [a for _t, a in curve[i:]]
        if statistics.fmean(rest) >= level:
            return t
    return None


def summarise(runs: list[dict[str, Any]], items: int) -> dict[str, Any]:
    by = {(r["condition"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    out: dict[str, Any] = {}
    for cond in CONDITIONS:
        mine = [by[cond, s] for s in seeds if (cond, s) in by]
        finals = [r["curve"][-1][1] for r in mine]
        entry: dict[str, Any] = {
            "final_mean": statistics.fmean(finals),
            "final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "initial_mean": statistics.fmean(r["curve"][0][1] for r in mine),
            "virtual_h_mean": statistics.fmean(r["virtual_s"] for r in mine) / 3600,
            "rounds": mine[0]["rounds"],
            **{k: sum(r[k] for r in mine) for k in ("late_rewards", "stale_groups_used", "stale_groups_dropped")},
            "answered_per_round": statistics.fmean(r["answered_per_round"] for r in mine),
        }
        if cond != "sync":
            ratios, diffs = [], []
            for s in seeds:
                sync, run = by["sync", s], by[cond, s]
                t = time_to_reach(run["curve"], sync["curve"][-1][1])
                ratios.append(None if t is None else t / sync["virtual_s"])
                diffs.append(run["curve"][-1][1] - sync["curve"][-1][1])
            reached = [x for x in ratios if x is not None]
            entry["time_ratio_per_seed"] = ratios
            entry["time_ratio_median"] = statistics.median(reached) if len(reached) == len(ratios) else None
            entry["final_minus_sync_per_seed"] = diffs
            entry["final_minus_sync_mean"] = statistics.fmean(diffs)
        out[cond] = entry
    # noise: the binomial standard error of one eval of `items` items at the sync final accuracy
    p = out["sync"]["final_mean"]
    noise = 2 * (p * (1 - p) / items) ** 0.5
    for cond in ("async-none", "async-is"):
        e = out[cond]
        e["no_loss_beyond_noise"] = e["final_minus_sync_mean"] >= -noise
        e["target_met"] = bool(
            e["time_ratio_median"] is not None
            and e["time_ratio_median"] <= TARGET_RATIO
            and e["no_loss_beyond_noise"]
        )
    out["noise_2se"] = noise
    return out


def write_markdown(path: Path, table: dict[str, Any], meta: dict[str, Any]) -> None:
    lines = [
        "# Async FedGRPO under stragglers: accuracy vs virtual time",
        "",
        f"Machine: {meta['machine']}; {meta['cores']} cores (shared). Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f". Seeds: {meta['seeds']}. Settings: {meta['settings']}. Total wall time "
        f"{meta['wall_s']:.0f} s.",
        "",
        "| condition | rounds | virtual h | acc start → final (mean ± std) | final − sync | "
        "time to stay at sync's final / sync's time (per seed) | late rewards | stale groups used / dropped | "
        "on-time answers / round | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cond, e in ((c, table[c]) for c in CONDITIONS):
        ratios = e.get("time_ratio_per_seed")
        ratio_s = "-" if ratios is None else ", ".join("never" if x is None else f"{x:.2f}" for x in ratios)
        diff = "-" if cond == "sync" else f"{100 * e['final_minus_sync_mean']:+.1f} pts"
        target = "-" if cond == "sync" else ("met" if e["target_met"] else "not met")
        lines.append(
            f"| {cond} | {e['rounds']} | {e['virtual_h_mean']:.3f} | {e['initial_mean']:.3f} → "
            f"{e['final_mean']:.3f} ± {e['final_std']:.3f} | {diff} | {ratio_s} | {e['late_rewards']} | "
            f"{e['stale_groups_used']} / {e['stale_groups_dropped']} | {e['answered_per_round']:.1f} | {target} |"
        )
    lines += [
        "",
        f"Target: async-is reaches (and stays at, averaged over its later evals) the synchronous "
        f"run's final accuracy in <= {TARGET_RATIO}x its virtual time (median over seeds), with final accuracy no lower than sync's by more than "
        f"the eval noise (2 binomial SE = {100 * table['noise_2se']:.1f} points).",
    ]
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, runs: list[dict[str, Any]]) -> None:
    from fedgrpo.experiments.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = {"sync": "tab:gray", "async-none": "tab:orange", "async-is": "tab:blue"}
    for cond in CONDITIONS:
        for i, r in enumerate(x for x in runs if x["condition"] == cond):
            t = [p[0] / 3600 for p in r["curve"]]
            acc = [p[1] for p in r["curve"]]
            ax.plot(t, acc, marker="o", ms=3, color=colours[cond], alpha=0.8, label=cond if i == 0 else None)
    ax.set_xlabel("virtual hours")
    ax.set_ylabel("held-out mean accuracy")
    ax.set_title("async-staleness: 5 phones + 5 slow Pi Zero 2 (one line per seed)")
    ax.grid(alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sync-rounds", type=int, default=12)
    ap.add_argument("--async-rounds", type=int, default=18)
    ap.add_argument("--eval-every", type=int, default=3)
    ap.add_argument("--per-domain", type=int, default=30, help="eval items per domain (5 domains)")
    ap.add_argument("--questions", type=int, default=8, help="questions per round")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--aux", type=int, default=40, help="auxiliary set size (competence cost)")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "async_study_accuracy.png")
    ap.add_argument("--summarise", type=Path, help="re-summarise a saved async_study.json")
    args = ap.parse_args(argv)
    if args.summarise:
        saved = json.loads(args.summarise.read_text())
        return _report(args, saved["runs"], saved["meta"])
    start = time.perf_counter()
    jobs = [(c, s) for c in CONDITIONS for s in range(args.seeds)]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(
        max_workers=args.workers, mp_context=get_context("spawn")
    ) as pool:
        futures = [pool.submit(run_one, c, s, _overrides(args, c, s), tmp) for c, s in jobs]
        for (c, s), fut in zip(jobs, futures):
            r = fut.result()
            runs.append(r)
            print(f"[async_study] {c} seed {s}: {r['curve'][0][1]:.3f} -> {r['curve'][-1][1]:.3f} "
                  f"in {r['virtual_s'] / 3600:.3f} virtual h ({r['wall_s']:.0f} s wall)", flush=True)
    meta = {
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "versions": versions("torch", "transformers", "simpy", "numpy"),
        "seeds": list(range(args.seeds)),
        "settings": f"sync {args.sync_rounds} rounds, async {args.async_rounds} rounds, "
        f"{args.questions} questions/round, lr {args.lr}, aux set {args.aux}, eval every {args.eval_every} rounds on "
        f"{5 * args.per_domain} items",
        "wall_s": time.perf_counter() - start,
        "eval_items": 5 * args.per_domain,
    }
    return _report(args, runs, meta)


def _report(args: argparse.Namespace, runs: list[dict[str, Any]], meta: dict[str, Any]) -> int:
    table = summarise(runs, int(meta.get("eval_items", 5 * args.per_domain)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "async_study.json").write_text(json.dumps({"meta": meta, "summary": table, "runs": runs}, indent=2))
    write_markdown(args.out / "async_study.md", table, meta)
    plot(args.plot, runs)
    print((args.out / "async_study.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
