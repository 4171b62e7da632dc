"""Asynchronous FedGRPO under stragglers (issue 14): accuracy vs virtual hours.

(One script over ~400 lines on purpose: a stand-alone study whose conditions, criterion,
tables and plot are read together; it is not imported by the library.)

Runs ``scenarios/async-staleness.yaml`` (model in the loop, sim mode: 5 phones + 5 Pi Zero 2
slowed 8x, one of each per domain) under three conditions, for ``--seeds`` seeds each:

* ``sync``: synchronous rounds that wait for the stragglers (``async: false``, deadline 60 s);
* ``async-none``: 6 s asynchronous rounds, late groups used as if on-policy (no correction);
* ``async-is``: the same with the decoupled truncated-IS loss (``correction: truncated_is``);
* ``fedbuff-none`` / ``fedbuff-is``: the two async conditions with FedBuff's buffer
  (``round_policy.min_update_groups`` = ``--buffer``, default a synchronous round's
  questions): an update only once that many groups are ready, so no update trains on fewer
  groups than a synchronous one. Added after the lr-2e-4 study (async-is: target not met;
  its diagnostics showed that many updates also hurt sync-long and async-drop, with no stale
  reward involved).

``--summarise FILE`` redoes the tables and the plot from a saved ``async_study.json``;
``--summarise FILE --diagnose SEED...`` adds diagnostic runs of those seeds: ``sync-long``
(synchronous for as many rounds as the async runs) and ``async-drop`` (asynchronous, late
rewards never used: ``max_staleness: 0``).

Per run it reads the eval records (held-out mean accuracy at virtual time ``time_s``) and the
late-reward records (stale groups used / dropped, staleness histogram in policy versions, the
loss's effective sample size and truncation of the behaviour weights).

The criterion, fixed before the study was run (issue 14: "async with correction reaches the
synchronous run's final accuracy in <= 0.6x the virtual time, with no loss of final accuracy
beyond noise"):

* a run's *final accuracy* is the mean of its last two evals (one eval is one binomial draw);
* the noise tolerance ``τ`` is the larger of the seed-to-seed std of sync's final accuracy
  and one eval's binomial standard error at it; the *level* is sync's mean final accuracy − τ;
* *reaches* = the first eval that is at or above the level and from which the run's evals,
  averaged with every later one, stay at or above it (:func:`time_to_reach`: one lucky eval
  does not count; "itself at or above" was added while the study ran, once its sync runs had
  finished and before any async run had, so that a start below the level is never "reached");
* the level must be above the runs' starting accuracy (else sync's own gain is within the
  noise and the target is reported *undetermined*);
* target met when every seed of ``async-is`` reaches the level by <= 0.6x sync's mean virtual
  time, and ``async-is``'s mean final accuracy is >= sync's − τ; the same criterion is
  reported for every asynchronous condition (issue 14's "async with correction" is
  ``async-is`` and, with the buffer, ``fedbuff-is``).

The async runs are given fewer rounds than would cover sync's virtual time (by default
~0.5x of it), so their final accuracy is taken *earlier* in virtual time than sync's. The
stricter reading (the same seed's last sync eval, no tolerance) is reported next to it.

Settings (defaults): sync 24 rounds, async 96, lr 1e-4 (the scenario's own), 500 eval items.
They were changed from 12 / 48 rounds, lr 2e-4 and 200 items after the first two studies,
looking at the *sync* runs only: at lr 2e-4 sync peaked within 3 rounds and then declined
(0.448 -> 0.354 in seed 1 over 24 rounds), so its "final accuracy" was a noisy point on a
falling curve and, on a zoo built on another machine, below the noise of its start (target
undetermined); at 1e-4 sync rises steadily (0.334 -> 0.48-0.50 in 24 rounds, 3 seeds), and
500 items bring one eval's SE from ~3.5 to ~2.2 points.

    nice -n 10 .venv/bin/python benchmarks/async_study.py       # -> benchmarks/results/async_study.{md,json}
    .venv/bin/python benchmarks/async_study.py --seeds 2 --sync-rounds 2 --async-rounds 4 --eval-every 1 --async-eval-every 2 --per-domain 4  # smoke
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
    "fedbuff-none": ["round_policy.correction=none"],
    "fedbuff-is": ["round_policy.correction=truncated_is"],
}
BUFFERED = ("fedbuff-none", "fedbuff-is")  # + round_policy.min_update_groups (--buffer)
# diagnostics (``--diagnose SEED``): what a seed's decline comes from; (overrides, round budget)
DIAGNOSTICS: dict[str, tuple[list[str], str]] = {
    # synchronous for as many rounds (updates) as the async runs make
    "sync-long": (CONDITIONS["sync"], "async"),
    # asynchronous, late rewards never used (stragglers cancelled at the close)
    "async-drop": (["round_policy.max_staleness=0"], "async"),
    # the negative control: async-is with every group's rewards shuffled among its candidates
    "async-shuffled": (["round_policy.correction=truncated_is", "server.grpo.shuffle_rewards=true"], "async"),
}
TARGET_RATIO = 0.6


def _overrides(args: argparse.Namespace, condition: str, seed: int) -> list[str]:
    if condition in DIAGNOSTICS:
        sets, budget = DIAGNOSTICS[condition]
    else:
        sets, budget = CONDITIONS[condition], "sync" if condition == "sync" else "async"
    if condition in BUFFERED:
        sets = [*sets, f"round_policy.min_update_groups={args.buffer or args.questions}"]
    rounds, every = (
        (args.sync_rounds, args.eval_every) if budget == "sync" else (args.async_rounds, args.async_eval_every)
    )
    return [
        *sets,
        f"seed={seed}",
        f"rounds={rounds}",
        f"eval.every={every}",
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
    stale = [r for r in rounds if r.get("grpo_ess") is not None and r.get("grpo_stale_sequences")]
    ess = [r["grpo_ess"] for r in stale]
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
        "ess_min": min(ess) if ess else None,
        "is_truncated_mean": statistics.fmean(r["grpo_is_truncated"] for r in stale) if stale else None,
        "is_weight_mean": statistics.fmean(r["grpo_is_weight_mean"] for r in stale) if stale else None,
        "answered_per_round": statistics.fmean(r["answered"] for r in rounds) if rounds else 0.0,
        "wall_s": time.perf_counter() - start,
    }


def time_to_reach(curve: list[tuple[float, float]], level: float) -> float | None:
    """First virtual time from which the run *stays* at ``level``: the earliest eval that is
    itself >= ``level`` and whose accuracy averaged with every later eval of the run is too
    (None if never). One lucky eval does not count, and neither does a level the run falls
    back from (nor a start below the level that later evals average out)."""
    for i, (t, acc) in enumerate(curve):
        rest = [a for _t, a in curve[i:]]
        if acc >= level and statistics.fmean(rest) >= level:
            return t
    return None


def final_accuracy(run: dict[str, Any]) -> float:
    """A run's final accuracy: the mean of its last two evals (one eval is a single noisy
    binomial draw; see the criterion in the module docstring)."""
    return statistics.fmean(a for _t, a in run["curve"][-2:])


def summarise(runs: list[dict[str, Any]], items: int) -> dict[str, Any]:
    """Per condition: accuracy, time and late-reward totals, and for async the criterion of
    the module docstring (fixed before the study was run)."""
    by = {(r["condition"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    sync = [by["sync", s] for s in seeds]
    sync_finals = [final_accuracy(r) for r in sync]
    sync_final = statistics.fmean(sync_finals)
    sync_time = statistics.fmean(r["virtual_s"] for r in sync)
    se = (sync_final * (1 - sync_final) / items) ** 0.5  # one eval's binomial SE
    tol = max(statistics.stdev(sync_finals) if len(sync_finals) > 1 else 0.0, se)
    out: dict[str, Any] = {"sync_final": sync_final, "sync_virtual_s": sync_time, "tolerance": tol,
                           "eval_se": se, "level": sync_final - tol}
    for cond in CONDITIONS:
        mine = [by[cond, s] for s in seeds if (cond, s) in by]
        finals = [final_accuracy(r) for r in mine]
        entry: dict[str, Any] = {
            "final_per_seed": finals,
            "final_mean": statistics.fmean(finals),
            "final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
            "initial_mean": statistics.fmean(r["curve"][0][1] for r in mine),
            "virtual_h_mean": statistics.fmean(r["virtual_s"] for r in mine) / 3600,
            "virtual_ratio": statistics.fmean(r["virtual_s"] for r in mine) / sync_time,
            "rounds": mine[0]["rounds"],
            **{k: sum(r[k] for r in mine) for k in ("late_rewards", "stale_groups_used", "stale_groups_dropped")},
            "answered_per_round": statistics.fmean(r["answered_per_round"] for r in mine),
            "staleness_hist": _sum_hists(r["staleness_hist"] for r in mine),
            **_is_means(mine),
        }
        if cond != "sync":
            t_tol = [time_to_reach(r["curve"], out["level"]) for r in mine]
            entry["time_ratio_per_seed"] = [None if t is None else t / sync_time for t in t_tol]
            # the stricter reading of issue 14: the same seed's last sync eval, no tolerance
            strict = [time_to_reach(r["curve"], by["sync", r["seed"]]["curve"][-1][1]) for r in mine]
            entry["strict_ratio_per_seed"] = [
                None if t is None else t / by["sync", r["seed"]]["virtual_s"] for t, r in zip(strict, mine)
            ]
            entry["final_minus_sync_mean"] = entry["final_mean"] - sync_final
            entry["reached_in_time"] = all(x is not None and x <= TARGET_RATIO for x in entry["time_ratio_per_seed"])
            entry["no_loss_beyond_noise"] = entry["final_mean"] >= sync_final - tol
            # a level the runs start at tests nothing: then the target is undetermined
            entry["determined"] = out["level"] > entry["initial_mean"]
            entry["target_met"] = bool(
                entry["determined"] and entry["reached_in_time"] and entry["no_loss_beyond_noise"]
            )
        out[cond] = entry
    return out


def _sum_hists(hists: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for h in hists:
        for k, v in h.items():
            total[k] = total.get(k, 0) + int(v)
    return dict(sorted(total.items(), key=lambda kv: int(kv[0])))


def _is_means(mine: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        xs = [r[key] for r in mine if r.get(key) is not None]
        return statistics.fmean(xs) if xs else None

    mins = [r["ess_min"] for r in mine if r.get("ess_min") is not None]
    return {"ess_mean": mean("ess_mean"), "ess_min": min(mins) if mins else None,
            "is_truncated_mean": mean("is_truncated_mean"), "is_weight_mean": mean("is_weight_mean")}


def _ratios(xs: list[float | None] | None) -> str:
    return "-" if xs is None else ", ".join("never" if x is None else f"{x:.2f}" for x in xs)


def write_markdown(path: Path, table: dict[str, Any], meta: dict[str, Any]) -> None:
    lines = [
        "# Async FedGRPO under stragglers: accuracy vs virtual time",
        "",
        f"Machine: {meta['machine']}; {meta['cores']} cores (shared). Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f". Seeds: {meta['seeds']}. Settings: {meta['settings']}. Total wall time "
        f"{meta['wall_s']:.0f} s.",
        "",
        "| condition | rounds | virtual h (× sync) | acc start → final (mean ± std) | final − sync | "
        "time to stay ≥ sync final − τ, × sync time (per seed) | same, strict: seed's last sync eval, no τ | "
        "late rewards | stale groups used / dropped | on-time answers / round | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cond, e in ((c, table[c]) for c in CONDITIONS):
        diff = "-" if cond == "sync" else f"{100 * e['final_minus_sync_mean']:+.1f} pts"
        target = "-" if cond == "sync" else ("met" if e["target_met"] else "not met")
        if cond != "sync" and not e.get("determined", True):
            target = "undetermined (level ≤ start)"
        lines.append(
            f"| {cond} | {e['rounds']} | {e['virtual_h_mean']:.3f} ({e['virtual_ratio']:.2f}) | "
            f"{e['initial_mean']:.3f} → {e['final_mean']:.3f} ± {e['final_std']:.3f} | {diff} | "
            f"{_ratios(e.get('time_ratio_per_seed'))} | {_ratios(e.get('strict_ratio_per_seed'))} | "
            f"{e['late_rewards']} | {e['stale_groups_used']} / {e['stale_groups_dropped']} | "
            f"{e['answered_per_round']:.1f} | {target} |"
        )
    lines += [
        "",
        "| condition | staleness of used late groups (policy versions: groups) | ESS mean (min) | "
        "IS weight mean | stale tokens truncated |",
        "|---|---|---|---|---|",
    ]
    for cond in (c for c in CONDITIONS if c != "sync"):
        e = table[cond]
        hist = ", ".join(f"{k}: {v}" for k, v in e["staleness_hist"].items()) or "-"
        ess = "-" if e["ess_mean"] is None else f"{e['ess_mean']:.3f}"
        ess += "" if e["ess_min"] is None else f" ({e['ess_min']:.3f})"
        w = "-" if e["is_weight_mean"] is None else f"{e['is_weight_mean']:.3f}"
        tr = "-" if e["is_truncated_mean"] is None else f"{100 * e['is_truncated_mean']:.2f} %"
        lines.append(f"| {cond} | {hist} | {ess} | {w} | {tr} |")
    lines += [
        "",
        f"Final accuracy = mean of a run's last two evals. τ = max(seed-to-seed std of sync's final "
        f"accuracy, one eval's binomial SE) = {100 * table['tolerance']:.1f} points; level = sync's mean "
        f"final − τ = {table['level']:.3f}. Target (fixed before the async runs finished; see the script's docstring): every async-is seed stays at "
        f"≥ the level (averaged over its later evals) from ≤ {TARGET_RATIO}× sync's mean virtual time "
        f"({table['sync_virtual_s']:.0f} s), and async-is's mean final accuracy ≥ sync's − τ. "
        "With correction 'none' the behaviour weights are 1 by construction (its ESS column is 1).",
    ]
    path.write_text("\n".join(lines) + "\n")


def diagnostics_markdown(diags: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    """The diagnostic runs next to the study's runs of the same seeds (accuracy at each eval)."""
    seeds = sorted({d["seed"] for d in diags})
    lines = [
        "",
        "## Diagnostics",
        "",
        "`sync-long`: synchronous rounds for as many rounds (updates) as the async runs; "
        "`async-drop`: asynchronous rounds with late rewards never used (`max_staleness: 0`); "
        "`async-shuffled`: async-is with each group's rewards shuffled among its candidates "
        "(the negative control: no reward signal).",
        "",
        "| run | seed | rounds | updates | virtual h | accuracy at each eval | final (last two) |",
        "|---|---|---|---|---|---|---|",
    ]
    mine = [r for r in runs if r["seed"] in seeds] + list(diags)
    for r in sorted(mine, key=lambda r: (r["seed"], r["condition"])):
        accs = " ".join(f"{a:.3f}" for _t, a in r["curve"])
        lines.append(
            f"| {r['condition']} | {r['seed']} | {r['rounds']} | {r['updates']} | "
            f"{r['virtual_s'] / 3600:.3f} | {accs} | {final_accuracy(r):.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot(path: Path, runs: list[dict[str, Any]], table: dict[str, Any] | None = None) -> None:
    from fedgrpo.experiments.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = {"sync": "tab:gray", "async-none": "tab:orange", "async-is": "tab:blue",
               "fedbuff-none": "tab:red", "fedbuff-is": "tab:green"}
    for cond in CONDITIONS:
        for i, r in enumerate(x for x in runs if x["condition"] == cond):
            t = [p[0] / 3600 for p in r["curve"]]
            acc = [p[1] for p in r["curve"]]
            ax.plot(t, acc, marker="o", ms=3, color=colours[cond], alpha=0.8, label=cond if i == 0 else None)
    if table is not None:  # the criterion: the level, and 0.6x sync's mean virtual time
        ax.axhline(table["level"], color="black", ls="--", lw=0.8, label="sync final − τ")
        ax.axvline(TARGET_RATIO * table["sync_virtual_s"] / 3600, color="black", ls=":", lw=0.8,
                   label=f"{TARGET_RATIO}× sync time")
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
    ap.add_argument("--sync-rounds", type=int, default=24)
    ap.add_argument("--async-rounds", type=int, default=96)
    ap.add_argument("--eval-every", type=int, default=3, help="sync: eval every this many rounds")
    ap.add_argument("--async-eval-every", type=int, default=8, help="async: eval every this many rounds")
    ap.add_argument("--per-domain", type=int, default=100, help="eval items per domain (5 domains)")
    ap.add_argument("--questions", type=int, default=8, help="questions per round")
    ap.add_argument("--lr", type=float, default=1e-4, help="the scenario's own")
    ap.add_argument("--buffer", type=int, default=None,
                    help="fedbuff-*: min_update_groups (default: --questions)")
    ap.add_argument("--aux", type=int, default=40, help="auxiliary set size (competence cost)")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "async_study_accuracy.png")
    ap.add_argument("--summarise", type=Path, help="re-summarise a saved async_study.json")
    ap.add_argument("--diagnose", type=int, nargs="+", metavar="SEED",
                    help=f"run the diagnostics ({', '.join(DIAGNOSTICS)}) for these seeds and add them "
                    "to the saved study (--summarise FILE, same settings)")
    args = ap.parse_args(argv)
    if args.diagnose:
        if not args.summarise:
            ap.error("--diagnose needs --summarise FILE (the study the diagnostics belong to)")
        saved = json.loads(args.summarise.read_text())
        diags = _run_jobs(args, [(c, s) for c in DIAGNOSTICS for s in args.diagnose])
        return _report(args, saved["runs"], saved["meta"], diags)
    if args.summarise:
        saved = json.loads(args.summarise.read_text())
        return _report(args, saved["runs"], saved["meta"], saved.get("diagnostics", []))
    start = time.perf_counter()
    runs = _run_jobs(args, [(c, s) for c in CONDITIONS for s in range(args.seeds)])
    meta = {
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "versions": versions("torch", "transformers", "simpy", "numpy"),
        "seeds": list(range(args.seeds)),
        "settings": f"sync {args.sync_rounds} rounds, async {args.async_rounds} rounds, "
        f"{args.questions} questions/round, lr {args.lr}, aux set {args.aux}, "
        f"fedbuff buffer {args.buffer or args.questions} groups, eval every {args.eval_every} (sync) / "
        f"{args.async_eval_every} (async) rounds on "
        f"{5 * args.per_domain} items",
        "wall_s": time.perf_counter() - start,
        "eval_items": 5 * args.per_domain,
    }
    return _report(args, runs, meta)


def _run_jobs(args: argparse.Namespace, jobs: list[tuple[str, int]]) -> list[dict[str, Any]]:
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
    return runs


def _report(
    args: argparse.Namespace, runs: list[dict[str, Any]], meta: dict[str, Any],
    diagnostics: list[dict[str, Any]] | None = None,
) -> int:  # fmt: skip
    table = summarise(runs, int(meta.get("eval_items", 5 * args.per_domain)))
    diags = diagnostics or []
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "summary": table, "runs": runs, "diagnostics": diags}
    (args.out / "async_study.json").write_text(json.dumps(doc, indent=2))
    write_markdown(args.out / "async_study.md", table, meta)
    if diags:
        with (args.out / "async_study.md").open("a") as fh:
            fh.write(diagnostics_markdown(diags, runs))
    plot(args.plot, runs, table)
    print((args.out / "async_study.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
