"""Edge reward fidelity on the real model with the format fixed: SmolLM2-135M-Instruct's
int8 / int4 ONNX rewards against PyTorch fp32, under the chat prompt the server uses.

``benchmarks/edge_scoring.py`` measures speed and likelihood fidelity under the plain zoo
prompt, where SmolLM2 never writes ``answer: N``, so its agreement reward could not be
measured. Here every backend is the same :class:`EdgeScorer` code with its prompt set to the
server's chat prompt (``server.prompt`` defaults: 3 same-domain exemplars, equation
rationale), so the device's own greedy answer is extractable and both model-based rewards are
comparable:

- **likelihood**: Spearman and max |Δ| of the rewards of the same candidates vs torch fp32;
- **agreement**: how often the device's greedy answer equals torch fp32's, how often the
  agreement reward of a candidate is the same, and how often the device's answer is right.

Candidates are in the server's format (``27+48 = 75`` / ``answer: 75``): per question one
right answer and wrong ones nearby, as a policy would write them.

    python benchmarks/edge_fidelity.py [--questions 3] [--threads 2]
    -> benchmarks/results/edge_fidelity.{json,md}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edge_scoring import ensure_export, load_backend, spearman  # noqa: E402
from machine import cpu_model  # noqa: E402

from fedgrpo.edge.answer_format import extract_answer, make_completion  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BACKENDS = ("torch-fp32", "ort-int8", "ort-int4")
DOMAINS = ("add", "sub", "mul", "mod")
CANDIDATES = 4  # per question: 1 right, 3 wrong


def workload(per_domain: int, seed: int = 0) -> tuple[list[Any], list[str], list[str]]:
    """(items, candidate questions, candidate completions) in the server's chat format."""
    from fedgrpo.server.tasks import build_suite

    suite = build_suite(list(DOMAINS), seed=0, train_per_domain=2000, test_per_domain=100, aux_pool_per_domain=100)
    rng = random.Random(seed)
    items = [i for d in DOMAINS for i in suite.test(d)[:per_domain]]
    questions, completions = [], []
    for item in items:
        for g in range(CANDIDATES):
            answer = int(item.answer) + (0 if g == 0 else rng.choice([-10, -2, -1, 1, 2, 10]))
            questions.append(item.question)
            completions.append(make_completion(f"{item.question} = {answer}", str(answer)).strip())
    return items, questions, completions


def chat_prompt_fn(hf_dir: Path) -> Any:
    """question -> the server's default chat prompt (domain taken from the question's operator)."""
    from transformers import AutoTokenizer

    from fedgrpo.server.prompting import PromptConfig, PromptFormatter
    from fedgrpo.server.tasks import build_suite

    suite = build_suite(list(DOMAINS), seed=0, train_per_domain=2000, test_per_domain=100, aux_pool_per_domain=100)
    formatter = PromptFormatter(AutoTokenizer.from_pretrained(hf_dir), PromptConfig(style="chat"), suite)
    ops = {"+": "add", "-": "sub", "*": "mul", "%": "mod"}

    def prompt(question: str) -> str:
        domain = next(d for op, d in ops.items() if op in question)
        return formatter(question, domain)

    return prompt


def measure(name: str, export_dir: Path, hf_dir: Path, threads: int, work: tuple[Any, Any, Any]) -> dict[str, Any]:
    items, questions, completions = work
    scorer = load_backend(name, export_dir, hf_dir, threads)
    scorer.prompt = chat_prompt_fn(hf_dir)
    scorer.config = dataclasses.replace(scorer.config, max_new_tokens=16)
    start = time.perf_counter()
    likelihood = scorer.likelihoods(questions, completions)
    mid = time.perf_counter()
    greedy = scorer.greedy_completions([i.question for i in items])
    end = time.perf_counter()
    answers = [extract_answer(t) for t in greedy]
    own = {i.question: a for i, a in zip(items, answers)}
    agreement = [1.0 if own[q] is not None and extract_answer(c) == own[q] else 0.0 for q, c in zip(questions, completions)]
    return {
        "likelihood": likelihood,
        "greedy": greedy,
        "answers": answers,
        "agreement": agreement,
        "answered": float(np.mean([a is not None for a in answers])),
        "correct": float(np.mean([a == i.answer for a, i in zip(answers, items)])),
        "likelihood_s": round(mid - start, 1),
        "greedy_s": round(end - mid, 1),
    }


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ref = runs["torch-fp32"]
    out = {}
    for name, r in runs.items():
        diff = np.abs(np.array(r["likelihood"]) - np.array(ref["likelihood"]))
        out[name] = {
            "likelihood_spearman": spearman(r["likelihood"], ref["likelihood"]),
            "likelihood_max_abs_diff": float(diff.max()),
            "greedy_answer_match": float(np.mean([a == b for a, b in zip(r["answers"], ref["answers"])])),
            "agreement_reward_match": float(np.mean(np.array(r["agreement"]) == np.array(ref["agreement"]))),
            "greedy_answered": r["answered"],
            "greedy_correct": r["correct"],
            "likelihood_s": r["likelihood_s"],
            "greedy_s": r["greedy_s"],
        }
    return out


def markdown(rep: dict[str, Any]) -> str:
    lines = [
        "# Edge reward fidelity on SmolLM2-135M-Instruct, chat prompt (format fixed)",
        "",
        f"{rep['machine']}; {rep['versions']}. {rep['questions']} questions ({', '.join(DOMAINS)}), "
        f"{rep['candidates']} candidates; every backend runs the same EdgeScorer with the server's chat "
        f"prompt. Note: {rep['load_note']}",
        "",
        "| backend | likelihood Spearman vs torch fp32 | max abs Δ | greedy answer = torch's | agreement reward = torch's | device answers | device correct | likelihood s | greedy s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in rep["fidelity"].items():
        lines.append(
            f"| {name} | {c['likelihood_spearman']:.3f} | {c['likelihood_max_abs_diff']:.3f} | "
            f"{c['greedy_answer_match']:.2f} | {c['agreement_reward_match']:.2f} | {c['greedy_answered']:.2f} | "
            f"{c['greedy_correct']:.2f} | {c['likelihood_s']} | {c['greedy_s']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=3, help="per domain")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--load-note", default="")
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), help="torch-fp32 is always the reference")
    parser.add_argument("--export-dir", default=None, help="an existing SmolLM2 export to reuse (default: export one)")
    args = parser.parse_args()
    import onnxruntime
    import torch

    from fedgrpo.edge.builtin_models import default_cache_dir, materialise_smollm2

    hf_dir = materialise_smollm2()
    if args.export_dir:
        export_dir = Path(args.export_dir)
    else:
        export_dir = ensure_export(str(hf_dir), default_cache_dir() / "bench" / "smollm2-135m-edge")
    work = workload(args.questions)
    backends = ["torch-fp32", *[b for b in args.backends if b != "torch-fp32"]]
    runs = {}
    for b in backends:
        runs[b] = measure(b, export_dir, hf_dir, args.threads, work)
        print(b, {k: runs[b][k] for k in ("answered", "correct", "likelihood_s", "greedy_s")}, flush=True)
    rep = {
        "model": "SmolLM2-135M-Instruct",
        "machine": f"{cpu_model()} ({os.cpu_count()} cores), {platform.platform()}",
        "versions": f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}",
        "questions": len(work[0]),
        "candidates": len(work[1]),
        "load_note": args.load_note or f"load average {os.getloadavg()[0]:.1f} at the end",
        "fidelity": compare(runs),
        "greedy": {b: r["greedy"] for b, r in runs.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "edge_fidelity.json").write_text(json.dumps(rep, indent=2) + "\n")
    (RESULTS / "edge_fidelity.md").write_text(markdown(rep))
    print(markdown(rep))


if __name__ == "__main__":
    main()
