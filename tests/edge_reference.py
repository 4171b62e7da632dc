"""Real tiny models for the edge tests, and the PyTorch reference the ONNX scorer must match.

Models are trained for a few seconds, saved as HF directories and exported once per test
session (cached in a module global; fixtures live in ``edge_fixtures``). The reference is
written independently of ``edge.scorer`` — unbatched, no padding, answer located by plain
string search — and torch stays out of ``edge/``.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.edge.answer_format import extract_answer, make_prompt, normalise_answer

TRAIN_STEPS = 150
ANSWER_TABLE_SIZE = 30


@dataclass
class TinyBuild:
    """One trained tiny model: its HF directory, its export directory and the items."""

    family: str
    hf_dir: Path
    export_dir: Path
    model: Any  # transformers PreTrainedModel (eval mode)
    tokenizer: Any  # PreTrainedTokenizerFast
    table_items: list[Any]  # TaskItems written to answers.jsonl
    other_items: list[Any]  # TaskItems the client does not hold
    seconds: float


_BUILDS: dict[str, TinyBuild] = {}


def _build(family: str, root: Path, quantize: tuple[str, ...]) -> TinyBuild:
    import torch

    from fedgrpo.edge.export import export_model
    from fedgrpo.server.tasks import build_suite
    from fedgrpo.server.zoo.architectures import TinyArch, build_tiny_model
    from fedgrpo.server.zoo.tokenizer import build_char_tokenizer, wrap_for_transformers
    from fedgrpo.server.zoo.train import TrainConfig, train_sft

    start = time.perf_counter()
    torch.set_num_threads(1)  # robust to a busy shared machine (no thread oversubscription)
    suite = build_suite(["add"], seed=0, train_per_domain=400, test_per_domain=20)
    train = suite.train("add")
    tokenizer = wrap_for_transformers(build_char_tokenizer())
    arch = TinyArch(family=family, layers=2, hidden=64, heads=4, max_positions=96)  # type: ignore[arg-type]
    model = build_tiny_model(arch, tokenizer, seed=1)
    steps = TRAIN_STEPS if family == "gpt2" else TRAIN_STEPS // 3
    train_sft(
        model,
        tokenizer,
        [(i.prompt, i.completion) for i in train],
        TrainConfig(steps=steps, batch_size=32, lr=3e-3, warmup_steps=10),
        seed=0,
    )
    model.eval()
    hf_dir = root / f"{family}-hf"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    table_items = list(train[:ANSWER_TABLE_SIZE])
    with (hf_dir / "answers.jsonl").open("w") as fh:
        for item in table_items:
            fh.write(json.dumps({"question": item.question, "answer": item.answer}) + "\n")
    export_dir = root / f"{family}-edge"
    with warnings.catch_warnings():  # tracer warnings from torch.onnx are expected here
        warnings.simplefilter("ignore")
        export_model(str(hf_dir), export_dir, quantize=quantize)
    return TinyBuild(
        family=family,
        hf_dir=hf_dir,
        export_dir=export_dir,
        model=model,
        tokenizer=tokenizer,
        table_items=table_items,
        other_items=list(suite.test("add")),
        seconds=time.perf_counter() - start,
    )


def get_build(family: str, factory: pytest.TempPathFactory) -> TinyBuild:
    if family not in _BUILDS:
        quantize = ("int8", "int4") if family == "gpt2" else ("int8",)
        _BUILDS[family] = _build(family, factory.mktemp(f"edge-{family}"), quantize)
    return _BUILDS[family]


def candidate_set(build: TinyBuild) -> tuple[list[str], list[str]]:
    """A mixed batch: correct, wrong, badly formatted, answer-less and varied-length items."""
    questions: list[str] = []
    completions: list[str] = []
    for k, item in enumerate(build.table_items[:4] + build.other_items[:6]):
        questions.append(item.question)
        if k % 3 == 0:
            completions.append(item.completion)
        elif k % 3 == 1:
            completions.append(item.completion.replace(f"answer: {item.answer}", "answer: 101"))
        else:
            completions.append(f" I think\nanswer: {item.answer}")
    questions += [build.other_items[0].question, build.other_items[1].question]
    completions += [" no idea at all", " 1+1=2\nanswer: 7 and then answer: 1234"]
    return questions, completions


# --------------------------------------------------------------------------- torch reference


def torch_likelihoods(
    build: TinyBuild, questions: list[str], completions: list[str]
) -> list[float]:
    """Mean probability of the final answer's tokens, one unpadded sequence at a time."""
    import torch

    rewards: list[float] = []
    for question, completion in zip(questions, completions):
        answer = extract_answer(completion)
        if answer is None:
            rewards.append(0.0)
            continue
        prompt = make_prompt(question)
        text = prompt + completion
        lo = len(prompt) + completion.rfind(answer)
        hi = lo + len(answer)
        enc = build.tokenizer(text, return_offsets_mapping=True)
        ids = enc["input_ids"]
        wanted = [
            t for t, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < hi and b > lo
        ]
        with torch.no_grad():
            logits = build.model(torch.tensor([ids])).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        probs = [float(logprobs[t - 1, ids[t]].exp()) for t in wanted]
        rewards.append(sum(probs) / len(probs))
    return rewards


def torch_greedy(build: TinyBuild, questions: list[str], max_new_tokens: int = 40) -> list[str]:
    """HF ``generate`` greedy continuation per question (unbatched)."""
    import torch

    texts: list[str] = []
    for question in questions:
        ids = build.tokenizer(make_prompt(question), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = build.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=build.tokenizer.eos_token_id,
                pad_token_id=build.tokenizer.pad_token_id,
            )
        texts.append(build.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return texts


def torch_agreement(build: TinyBuild, questions: list[str], completions: list[str]) -> list[float]:
    own = [extract_answer(t) for t in torch_greedy(build, questions)]
    return [
        1.0 if a is not None and extract_answer(c) == a else 0.0 for a, c in zip(own, completions)
    ]


def torch_competence(build: TinyBuild, questions: list[str], answers: list[str]) -> list[float]:
    own = [extract_answer(t) for t in torch_greedy(build, questions)]
    return [
        1.0 if a is not None and a == normalise_answer(r) else 0.0 for a, r in zip(own, answers)
    ]
