"""Does a real instruct model write our format? SmolLM2-135M-Instruct under each prompt style.

For every prompt variant (plain zoo format; chat template + 3 same-domain exemplars with the
equation rationale, the default; the same with the zoo's worked rationale), greedy answers on
held-out test items of every domain: format rate (``follows_format``), answer rate
(``extract_answer`` finds a number) and accuracy, per domain. Same items for every variant.

    python benchmarks/real_model_prompting.py [--per-domain 20] [--threads 2]
    -> benchmarks/results/real_model_prompting.{json,md}
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402  (benchmarks/, the script's own folder)

from fedgrpo.edge.answer_format import extract_answer, follows_format, is_correct  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DOMAINS = ("add", "sub", "mul", "mod", "sort")
VARIANTS: dict[str, dict[str, Any]] = {
    "chat + 3 exemplars, equation rationale (default)": {"style": "chat", "shots": 3},
    "plain (zoo format, no exemplars)": {"style": "plain"},
    "chat + 3 exemplars, worked rationale": {"style": "chat", "shots": 3, "rationale": "worked"},
    "chat + 0 exemplars (system line only)": {"style": "chat", "shots": 0},
}


def measure(model: Any, tok: Any, suite: Any, variant: dict[str, Any], per_domain: int) -> dict[str, Any]:
    from fedgrpo.server.generation import SamplingParams, generate
    from fedgrpo.server.prompting import PromptConfig, PromptFormatter, prompted_suite

    ps = prompted_suite(suite, PromptFormatter(tok, PromptConfig(**variant), suite))
    items = [i for d in suite.domains for i in ps.test(d)[:per_domain]]
    start = time.perf_counter()
    texts, prompt_ids, _ = generate(model, tok, [i.prompt for i in items], SamplingParams(24, temperature=0.0))
    wall = time.perf_counter() - start
    rows: dict[str, dict[str, float]] = {}
    for d in suite.domains:
        pairs = [(i, t) for i, t in zip(items, texts) if i.domain == d]
        rows[d] = {
            "format": sum(follows_format(t) for _, t in pairs) / len(pairs),
            "answered": sum(extract_answer(t) is not None for _, t in pairs) / len(pairs),
            "accuracy": sum(is_correct(t, i.answer) for i, t in pairs) / len(pairs),
        }
    n = len(items)
    return {
        "variant": variant,
        "per_domain": rows,
        "format": sum(follows_format(t) for t in texts) / n,
        "accuracy": sum(is_correct(t, i.answer) for i, t in zip(items, texts)) / n,
        "items": n,
        "prompt_tokens_mean": sum(len(p) for p in prompt_ids) / n,
        "wall_s": round(wall, 1),
        "examples": [{"question": i.question, "completion": t} for i, t in list(zip(items, texts))[::per_domain][:5]],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# SmolLM2-135M-Instruct: format and accuracy by prompt style",
        "",
        f"{result['machine']}; torch {result['versions']['torch']}, transformers "
        f"{result['versions']['transformers']}. Greedy, 24 new tokens, {result['per_domain']} "
        f"held-out test items per domain (the same items for every variant). Note: {result['load_note']}",
        "",
        "| prompt | " + " | ".join(f"{d} fmt / acc" for d in DOMAINS) + " | format | accuracy | prompt tokens | wall s |",
        "|---|" + "---|" * (len(DOMAINS) + 4),
    ]
    for name, r in result["variants"].items():
        cells = [f"{r['per_domain'][d]['format']:.2f} / {r['per_domain'][d]['accuracy']:.2f}" for d in DOMAINS]
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | **{r['format']:.2f}** | **{r['accuracy']:.2f}** | {r['prompt_tokens_mean']:.0f} | {r['wall_s']} |"
        )
    lines += ["", "Examples (first item of each domain):", ""]
    for name, r in result["variants"].items():
        lines.append(f"* {name}: " + "; ".join(f"`{e['question']}` → `{e['completion']!r}`" for e in r["examples"]))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-domain", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="names from VARIANTS")
    parser.add_argument("--load-note", default="", help="what else ran on the machine")
    args = parser.parse_args()
    import os

    import torch
    import transformers

    from fedgrpo.server.tasks import build_suite
    from fedgrpo.server.zoo.loading import load_causal_lm

    torch.set_num_threads(args.threads)
    model, tok = load_causal_lm("builtin:smollm2-135m-instruct")
    suite = build_suite(list(DOMAINS), seed=0, train_per_domain=2000, test_per_domain=100, aux_pool_per_domain=100)
    result: dict[str, Any] = {
        "model": "SmolLM2-135M-Instruct (builtin:smollm2-135m-instruct)",
        "machine": f"{cpu_model()} ({os.cpu_count()} cores), {platform.platform()}, torch threads {args.threads}",
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
        "per_domain": args.per_domain,
        "load_note": args.load_note or f"load average at start {os.getloadavg()[0]:.1f}",
        "variants": {},
    }
    for name in args.variants:
        result["variants"][name] = measure(model, tok, suite, VARIANTS[name], args.per_domain)
        print(name, {k: result["variants"][name][k] for k in ("format", "accuracy", "wall_s")}, flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "real_model_prompting.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "real_model_prompting.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
