"""Greedy answers of the scenario's server model and of a trained one, side by side.

For looking at *what* a run changed in a domain (e.g. ``mul`` falling in the smollm2 runs):
the same prompts as training and evaluation (the scenario's ``server.prompt``), the first
``--items`` test items of ``--domain``, greedy decoding.

    python benchmarks/inspect_answers.py RUN_DIR/final_model --domain mul --set seed=2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trained", help="a run's final_model directory")
    ap.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "smollm2.yaml")
    ap.add_argument("--set", action="append", default=[], help="scenario override (the run's seed: its exemplars)")
    ap.add_argument("--domain", default="mul")
    ap.add_argument("--items", type=int, default=12)
    args = ap.parse_args(argv)

    from fedgrpo.experiments.context import build_context, resolve_model
    from fedgrpo.scenarios.loader import load_scenario
    from fedgrpo.scenarios.mapping import prompt_config
    from fedgrpo.server.generation import SamplingParams, generate
    from fedgrpo.server.prompting import PromptFormatter, prompted_suite
    from fedgrpo.server.zoo.loading import load_causal_lm

    s = load_scenario(args.scenario, args.set)
    ctx = build_context(s)
    base, tok = load_causal_lm(resolve_model(ctx, s.server.model))
    suite = prompted_suite(ctx.suite, PromptFormatter(tok, prompt_config(s), ctx.suite))
    items = suite.test(args.domain)[: args.items]
    trained, _ = load_causal_lm(args.trained)
    params = SamplingParams(s.server.grpo.max_new_tokens, temperature=0.0)
    answers = [generate(m, tok, [i.prompt for i in items], params)[0] for m in (base, trained)]
    print("| question | answer | base | trained |\n|---|---|---|---|")
    for item, a, b in zip(items, *answers):
        q = item.question.strip().splitlines()[-1][-40:]
        print(f"| `{q}` | {item.answer} | `{a.splitlines()[0] if a else ''}` | `{b.splitlines()[0] if b else ''}` |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
