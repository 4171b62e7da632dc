"""A real pretrained server model learning from rewards: ``scenarios/smollm2.yaml`` end to end.

Runs the scenario in this process (the normal runner: SmolLM2-135M-Instruct as the server,
the zoo experts as int8 ONNX clients in sim mode), then reads the run's records: wall time,
seconds per round (the rounds' ``compute_s``), held-out accuracy before and after on the same
items, the gain and the one-sided paired sign test's p (``server/stats.py``, as ``make demo``
prints it). On a GPU it also reports peak GPU memory.

    python benchmarks/real_model.py                      # -> benchmarks/results/real_model.{json,md}
    python benchmarks/real_model.py --rounds 3 --device cuda --tag gpu_smoke   # what gpu_smoke.sh runs
    python benchmarks/real_model.py --set server.grpo.lr=2e-5 --tag trial      # tuning runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402  (benchmarks/, the script's own folder)

RESULTS = ROOT / "benchmarks" / "results"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    from fedgrpo.experiments.runner import run_scenario
    from fedgrpo.scenarios.loader import load_scenario, new_run_dir
    from fedgrpo.scenarios.mapping import device_config
    from fedgrpo.server.device import place

    sets = list(args.set)
    if args.rounds is not None:
        sets.append(f"rounds={args.rounds}")
    if args.device is not None:
        sets.append(f"server.device={args.device}")
    load_before = os.getloadavg()
    if args.from_run:  # a run made earlier with `fedgrpo run scenarios/smollm2.yaml ...`
        run_dir = Path(args.from_run)
        scenario = load_scenario(run_dir / "scenario.yaml")
        summary = json.loads((run_dir / "summary.json").read_text())
        wall = float(summary["wall_s"])
        sets = [f"(from {run_dir}: rounds={scenario.rounds}, eval.per_domain={scenario.eval.per_domain})"]
    else:
        scenario = load_scenario(ROOT / "scenarios" / "smollm2.yaml", sets)
        out = Path(args.out or tempfile.mkdtemp(prefix="fedgrpo-real-model-"))
        run_dir = new_run_dir(scenario, out)
        start = time.perf_counter()
        summary = run_scenario(scenario, run_dir)
        wall = time.perf_counter() - start
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    rounds = [r for r in records if r.get("event") == "round"]
    change = summary.get("accuracy_change") or {}
    placement = place(device_config(scenario))
    gpu = placement.device.startswith("cuda")
    credit = _partial_credit(scenario)
    result: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct (builtin:smollm2-135m-instruct)",
        "clients": "5 zoo experts, int8 ONNX, answer tables (AE) else agreement"
        + (f", partial credit {credit}" if credit else ""),
        "partial_credit": credit,
        "training": _training(scenario),
        "device": placement.device,
        "dtype": placement.dtype,
        "rounds": summary["rounds_completed"],
        "wall_s": round(wall, 1),
        "sec_per_round": round(sum(r["compute_s"] for r in rounds) / max(1, len(rounds)), 2),
        "initial_accuracy": summary["initial_mean_accuracy"],
        "final_accuracy": summary["final_mean_accuracy"],
        "gain": None
        if summary["final_mean_accuracy"] is None
        else round(summary["final_mean_accuracy"] - summary["initial_mean_accuracy"], 4),
        "gained": change.get("gained"),
        "lost": change.get("lost"),
        "eval_items": change.get("items"),
        "p_value": change.get("p_value"),
        "initial_format_rate": summary["initial_format_rate"],
        "final_format_rate": summary["final_format_rate"],
        "initial_per_domain": summary["initial_accuracy"],
        "final_per_domain": summary["final_accuracy"],
        "reward_mean_per_round": [r.get("reward_mean") for r in rounds],
        "sample_accuracy_per_round": [r.get("true_accuracy_of_samples") for r in rounds],
        "groups": sum(int(r.get("groups") or 0) for r in rounds),
        "groups_with_signal": sum(int(r.get("groups_with_signal") or 0) for r in rounds),
        "updates": sum(bool(r.get("updated")) for r in rounds),
        "gpu_peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if gpu else None,
        "overrides": sets,
        "run_dir": str(run_dir),
        "machine": f"{cpu_model()} ({os.cpu_count()} cores), {platform.platform()}",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        # a run summarised with --from-run ran in another process: its load is in load_note
        "load_average_before_after": None
        if args.from_run
        else [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "load_note": args.load_note,
        "nice": None if args.from_run else os.nice(0),
    }
    return result


def _training(scenario: Any) -> str:
    """What the update trains: every weight, or a LoRA adapter (server.lora)."""
    lora = scenario.server.lora
    if lora is None:
        return f"full fine-tuning, lr {scenario.server.grpo.lr:g}"
    return f"LoRA rank {lora.rank}, alpha {lora.alpha:g}, {lora.target_modules}, lr {scenario.server.grpo.lr:g}"


def _partial_credit(scenario: Any) -> float:
    """The clients' partial credit (one value when every group has the same, else the largest)."""
    return max((g.partial_credit for g in scenario.clients.groups), default=0.0)


def _load(r: dict[str, Any]) -> str:
    la = r["load_average_before_after"]
    if la is None:
        return "summarised from its run directory (--from-run);"
    return f"nice {r['nice']}; load average {la[0]} before, {la[1]} after."


def _p_text(p: float | None) -> str:
    return "–" if p is None else f"{p:.2g}"


def verdict(r: dict[str, Any]) -> str:
    """Whether the run meets the learning target, from its own figures."""
    p = r["p_value"]
    learned = p is not None and p < 0.05 and (r["gain"] or 0) > 0
    in_time = r["wall_s"] <= 1200
    if learned and in_time:
        return "**met**"
    why = [] if learned else [f"p = {_p_text(p)}"]
    why += [] if in_time else [f"wall {r['wall_s']} s > 1200 s"]
    return "**not met** (" + ", ".join(why) + ")"


def markdown(r: dict[str, Any]) -> str:
    p = _p_text(r["p_value"])
    lines = [
        "# A real pretrained model learning from rewards: scenarios/smollm2.yaml",
        "",
        f"{r['machine']}; torch {r['versions']['torch']}, transformers {r['versions']['transformers']}; "
        f"{_load(r)} {r['load_note']}",
        "",
        "| model | clients | device | rounds | wall s | s/round | acc before | acc after | gain | gained / lost | p (sign test) | format before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['model']} | {r['clients']} | {r['device']} ({r['dtype']}) | {r['rounds']} | {r['wall_s']} | "
        f"{r['sec_per_round']} | {r['initial_accuracy']:.3f} | {r['final_accuracy']:.3f} | "
        f"{100 * r['gain']:+.1f} pts | {r['gained']} / {r['lost']} of {r['eval_items']} | {p} | "
        f"{r['initial_format_rate']:.2f} → {r['final_format_rate']:.2f} |",
        "",
        f"Per domain before: {r['initial_per_domain']}; after: {r['final_per_domain']}.",
        f"Groups whose rewards varied (the only ones with a GRPO gradient): "
        f"{r.get('groups_with_signal')} of {r.get('groups')}; optimizer steps: {r.get('updates')}.",
        f"Training: {r.get('training', 'full fine-tuning')}. "
        f"Overrides: {r['overrides'] or 'none'}. GPU peak memory MB: {r['gpu_peak_memory_mb']}.",
        "",
        f"Target (issue 13: paired sign test p < 0.05 in <= 20 min on 2 CPU cores): {verdict(r)}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--device", default=None, help="server.device override (auto|cpu|cuda|cuda:N)")
    parser.add_argument("--set", action="append", default=[], help="scenario override, as fedgrpo run --set")
    parser.add_argument("--out", default=None, help="parent of the run directory (default: a temp dir)")
    parser.add_argument("--tag", default="real_model", help="results file name (benchmarks/results/TAG.*)")
    parser.add_argument("--load-note", default="", help="what else ran on the machine")
    parser.add_argument("--from-run", default=None, help="summarise an existing smollm2 run directory instead")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps({k: result[k] for k in ("device", "rounds", "wall_s", "sec_per_round", "gain", "p_value", "gpu_peak_memory_mb")}))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.tag}.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
