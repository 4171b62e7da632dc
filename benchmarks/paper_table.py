"""The paper's comparison on our zoo: zero-shot, a FedPETuning LoRA baseline, central GRPO and
FedGRPO with each selector, plus the mixed-quality population and "more clients help".

    python benchmarks/paper_table.py                  # everything, 3 seeds (~45 min on 2 cores)
    python benchmarks/paper_table.py --rows main --seeds 1

Writes benchmarks/results/paper_table.{md,json} (machine, versions, seeds, wall time per row)
and docs/img/paper_table_accuracy.png (mean held-out accuracy vs round, one line per row).
Every FedGRPO row is a real `fedgrpo run` of a shipped scenario with `--set` overrides; the
zoos are built once up front (cached in models/), then runs go two at a time, one torch
thread each. The gain of a run is final minus initial greedy accuracy on the 500 held-out
test items; the sign test compares the same items before and after (and, for the population,
the confidence graph against random on the same seed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import cpu_model, versions  # noqa: E402

QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
POPULATION = ROOT / "scenarios" / "population.yaml"


@dataclass(frozen=True)
class Row:
    name: str
    group: str  # main | population | clients
    scenario: Path
    overrides: tuple[str, ...] = ()
    kind: str = "run"  # run | fedpetuning
    note: str = ""


def _clients(n: int) -> tuple[str, ...]:
    return (f"clients.groups.0.count={n}",)


ROWS: tuple[Row, ...] = (
    Row("zero-shot", "main", QUICKSTART, ("server.baseline=zero_shot", "rounds=1"), note="the base, no training"),
    Row("fedpetuning-lora", "main", QUICKSTART, kind="fedpetuning", note="5 clients fine-tune a rank-8 LoRA on their data, FedAvg"),
    Row("central-grpo", "main", QUICKSTART, ("server.baseline=central_grpo",), note="server scores with ground truth"),
    Row("fedgrpo-random", "main", QUICKSTART, ("selection.selector=random",)),
    Row("fedgrpo-confidence_graph", "main", QUICKSTART),
    Row("fedgrpo-oracle", "main", QUICKSTART, ("selection.selector=oracle",)),
    Row("fedgrpo-all", "main", QUICKSTART, ("selection.selector=all",)),
    Row("population-random", "population", POPULATION, ("selection.selector=random",)),
    Row("population-confidence_graph", "population", POPULATION),
    Row("population-oracle", "population", POPULATION, ("selection.selector=oracle",)),
    Row("clients-4", "clients", QUICKSTART, _clients(4), note="sort has no expert"),
    Row("clients-8", "clients", QUICKSTART, _clients(8)),
    Row("clients-20", "clients", QUICKSTART, _clients(20)),
)


@dataclass
class Result:
    row: str
    seed: int
    initial: float
    final: float
    bytes: int
    wall_s: float
    p_value: float | None
    curve: list[tuple[int, float]] = field(default_factory=list)
    correct_items: Sequence[int] | str = ""  # 0/1 per test item ("0101" from older runs)

    @property
    def gain(self) -> float:
        return self.final - self.initial


def _scenario(row: Row, seed: int, extra: tuple[str, ...] = ()) -> Any:
    from fedgrpo.scenarios.loader import load_scenario

    return load_scenario(row.scenario, [*row.overrides, f"seed={seed}", "outputs.progress=false", *extra])


def _run_fedgrpo(row: Row, seed: int, out: Path) -> Result:
    from fedgrpo.experiments.records import read_records
    from fedgrpo.experiments.runner import run_scenario

    s = _scenario(row, seed, ("checkpoint.every=0",))
    run_dir = out / f"{row.name}-s{seed}"
    summary = run_scenario(s, run_dir)
    evals = [r for r in read_records(run_dir / "metrics.jsonl") if r.get("event") == "eval"]
    change = summary.get("accuracy_change") or {}
    return Result(
        row.name, seed, summary["initial_mean_accuracy"], summary["final_mean_accuracy"],
        summary["total_bytes"], summary["wall_s"], change.get("p_value"),
        [(int(e["round"]), float(e["mean_accuracy"])) for e in evals],
        evals[-1]["correct_items"],
    )


def _run_fedpetuning(row: Row, seed: int, out: Path) -> Result:
    """The LoRA baseline over the scenario's clients and rounds (same zoo, same test items)."""
    import torch

    from fedgrpo.experiments.context import build_context, resolve_model
    from fedgrpo.server.baselines.fedpetuning import FedPETuningConfig, run_fedpetuning
    from fedgrpo.server.stats import paired_sign_test
    from fedgrpo.server.zoo.evaluate import evaluate_on_suite
    from fedgrpo.server.zoo.loading import load_causal_lm

    torch.set_num_threads(1)
    s = _scenario(row, seed)
    ctx = build_context(s)
    model, tok = load_causal_lm(resolve_model(ctx, s.server.model))
    start = time.perf_counter()
    before = evaluate_on_suite(model, tok, ctx.suite, s.eval.per_domain)
    parts = ctx.spec.partition.split(ctx.suite)
    clients = [[(i.prompt, i.completion) for i in part] for part in parts]
    cfg = FedPETuningConfig(rounds=s.rounds, seed=seed)
    curve = [(0, before.mean_accuracy)]

    def every(record: dict[str, Any], adapted: Any) -> None:
        if record["round"] % s.eval.every == 0 and record["round"] < s.rounds:
            curve.append((record["round"], evaluate_on_suite(adapted, tok, ctx.suite, s.eval.per_domain).mean_accuracy))

    res = run_fedpetuning(model, tok, clients, cfg, on_round=every)
    after = evaluate_on_suite(res.model, tok, ctx.suite, s.eval.per_domain)
    curve.append((s.rounds, after.mean_accuracy))
    cmp = paired_sign_test(list(before.correct), list(after.correct))
    return Result(
        row.name, seed, before.mean_accuracy, after.mean_accuracy, res.bytes_total,
        round(time.perf_counter() - start, 2), cmp.p_value, curve,
        "".join("1" if c else "0" for c in after.correct),
    )


def _with_rounds(row: Row, rounds: int) -> Row:
    from dataclasses import replace

    if any(o.startswith("rounds=") for o in row.overrides):
        return row
    return replace(row, overrides=(*row.overrides, f"rounds={rounds}", f"eval.every={rounds}"))


def run_one(row: Row, seed: int, out: str) -> Result:
    import torch

    torch.set_num_threads(1)
    if row.kind == "fedpetuning":
        return _run_fedpetuning(row, seed, Path(out))
    return _run_fedgrpo(row, seed, Path(out))


def prebuild(rows: list[Row]) -> None:
    """Build every zoo the rows need once, before runs go in parallel."""
    from fedgrpo.experiments.context import build_context

    seen = set()
    for row in rows:
        s = _scenario(row, 0)
        key = (s.tasks.model_dump_json(), tuple(s.partition_qualities()), s.num_partitions)
        if key not in seen:
            seen.add(key)
            build_context(s)


def summarise(rows: list[Row], results: list[Result]) -> list[dict[str, Any]]:
    from fedgrpo.server.stats import paired_sign_test

    out = []
    by_row = {r.name: [x for x in results if x.row == r.name] for r in rows}
    for row in rows:
        runs = sorted(by_row[row.name], key=lambda x: x.seed)
        gains = [x.gain for x in runs]
        entry: dict[str, Any] = {
            "name": row.name,
            "group": row.group,
            "mean_gain": statistics.fmean(gains),
            "std_gain": statistics.stdev(gains) if len(gains) > 1 else 0.0,
            "bytes": int(statistics.fmean([x.bytes for x in runs])),
            "seeds": [x.seed for x in runs],
            "gains": gains,
            "initial_accuracy": statistics.fmean([x.initial for x in runs]),
            "final_accuracy": statistics.fmean([x.final for x in runs]),
            "p_values": [x.p_value for x in runs],
            "wall_s_mean": statistics.fmean([x.wall_s for x in runs]),
            "note": row.note,
        }
        if row.name == "population-confidence_graph" and by_row.get("population-random"):
            vs = {x.seed: x for x in by_row["population-random"]}
            entry["vs_random_p_values"] = [
                paired_sign_test(
                    [bool(int(c)) for c in vs[x.seed].correct_items],
                    [bool(int(c)) for c in x.correct_items],
                ).p_value
                for x in runs
                if x.seed in vs
            ]
        out.append(entry)
    return out


def write_markdown(path: Path, table: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    lines = [
        "# Paper table: held-out accuracy gain over the base (500 test items, greedy)",
        "",
        f"Machine: {meta['machine']}; {meta['cores']} cores. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f". Seeds: {meta['seeds']}. Total wall time {meta['wall_s']:.0f} s.",
        "",
        "| row | gain (points) mean ± std | final acc | bytes per run | p per seed | wall s per run | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in table:
        ps = ", ".join("-" if p is None else f"{p:.1e}" for p in e["p_values"])
        extra = ""
        if "vs_random_p_values" in e:
            extra = "; vs random p = " + ", ".join(f"{p:.1e}" for p in e["vs_random_p_values"])
        lines.append(
            f"| {e['name']} | {100 * e['mean_gain']:+.1f} ± {100 * e['std_gain']:.1f} | "
            f"{e['final_accuracy']:.3f} | {_fmt_bytes(e['bytes'])} | {ps} | {e['wall_s_mean']:.0f} | "
            f"{e['note']}{extra} |"
        )
    path.write_text("\n".join(lines) + "\n")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def plot(path: Path, rows: list[Row], results: list[Result]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in ("main", "population", "clients") if any(r.group == g for r in rows)]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for row in (r for r in rows if r.group == group):
            curves = [x.curve for x in results if x.row == row.name and len(x.curve) > 1]
            if not curves:
                continue
            rounds = [r for r, _ in curves[0]]
            mean = [statistics.fmean(c[i][1] for c in curves if len(c) > i) for i in range(len(rounds))]
            ax.plot(rounds, mean, marker="o", ms=3, label=row.name)
        ax.set_title(group)
        ax.set_xlabel("round")
        ax.set_ylabel("held-out mean accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per row (default 3)")
    ap.add_argument("--rows", default="main,population,clients", help="row groups (default all)")
    ap.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="results directory")
    ap.add_argument("--rounds", type=int, help="override every row's rounds (smoke runs)")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "paper_table_accuracy.png")
    args = ap.parse_args(argv)
    wanted = set(args.rows.split(","))
    rows = [r for r in ROWS if r.group in wanted]
    if args.rounds:
        rows = [_with_rounds(r, args.rounds) for r in rows]
    start = time.perf_counter()
    prebuild(rows)
    jobs = [(r, seed) for seed in range(args.seeds) for r in rows]
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(
        max_workers=args.workers, mp_context=get_context("spawn")
    ) as pool:
        futures = [pool.submit(run_one, r, seed, tmp) for r, seed in jobs]
        for (r, seed), fut in zip(jobs, futures):
            res = fut.result()
            results.append(res)
            print(f"[paper_table] {r.name} seed {seed}: {res.initial:.3f} -> {res.final:.3f} "
                  f"({100 * res.gain:+.1f}) in {res.wall_s:.0f}s", flush=True)
    table = summarise(rows, results)
    import os

    meta = {
        "machine": cpu_model(),
        "cores": os.cpu_count(),
        "versions": versions("torch", "transformers", "peft", "onnxruntime", "numpy"),
        "seeds": list(range(args.seeds)),
        "wall_s": time.perf_counter() - start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "paper_table.json").write_text(json.dumps({"meta": meta, "rows": table}, indent=2))
    write_markdown(args.out / "paper_table.md", table, meta)
    plot(args.plot, rows, results)
    print((args.out / "paper_table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
