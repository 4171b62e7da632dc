"""Shared-prompt forward passes (server/prefix.py) against the plain forward, on real tiny
GPT-2 and Llama models: same log-probs, same gradients, same greedy text."""

from __future__ import annotations

from typing import Any

import pytest

from fedgrpo.server.generation import SamplingParams, generate
from fedgrpo.server.prefix import distinct_rows
from fedgrpo.server.rollout import completion_logps, rollout
from fedgrpo.server.zoo.architectures import TinyArch, build_tiny_model
from fedgrpo.server.zoo.tokenizer import build_char_tokenizer, wrap_for_transformers

PROMPTS = ["Q: 12+7\nA:", "Q: sort 5321\nA:", "Q: 9*8\nA:"]  # different lengths: left padding


def _model(family: str) -> tuple[Any, Any]:
    tok = wrap_for_transformers(build_char_tokenizer())
    arch = TinyArch(family=family, layers=2, hidden=64, heads=4, max_positions=96)  # type: ignore[arg-type]
    model = build_tiny_model(arch, tok, seed=3)
    model.eval()
    return model, tok


def _batch(family: str, group: int = 4) -> tuple[Any, Any, Any]:
    import torch

    model, tok = _model(family)
    batch = rollout(model, tok, PROMPTS, PROMPTS, group, SamplingParams(12, 1.0),
                    torch.Generator().manual_seed(0))  # fmt: skip
    return model, tok, batch


def test_distinct_rows_groups_equal_masked_rows() -> None:
    import torch

    ids = torch.tensor([[0, 5, 6], [9, 5, 6], [0, 5, 7], [1, 5, 6]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 1, 1], [1, 1, 1]])
    first, inverse = distinct_rows(ids, mask)
    assert inverse[0] == inverse[1]  # differ only under the padding
    assert len({int(i) for i in inverse}) == 3
    assert (inverse[first] == torch.arange(len(first))).all()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_shared_prompt_logps_equal_the_plain_forward(family: str) -> None:
    import torch

    model, _, batch = _batch(family)
    args = (batch.input_ids, batch.attention_mask, batch.completion_length)
    with torch.no_grad():
        plain = completion_logps(model, *args)
        shared = completion_logps(model, *args, share_prompt=True)
    mask = batch.completion_mask
    assert torch.allclose(plain * mask, shared * mask, atol=1e-5)
    assert torch.allclose(batch.old_logps * mask, plain * mask, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_shared_prompt_gradients_equal_the_plain_forward(family: str) -> None:
    import torch

    model, _, batch = _batch(family)
    args = (batch.input_ids, batch.attention_mask, batch.completion_length)
    weights = torch.linspace(-1, 1, batch.input_ids.shape[0])[:, None] * batch.completion_mask
    grads = []
    for share in (False, True):
        model.zero_grad(set_to_none=True)
        (completion_logps(model, *args, share_prompt=share) * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-5, rtol=1e-4), name
    # the prompt's positions are in the graph: the embedding of a prompt-only character moves
    assert any(g.abs().sum() > 0 for n, g in grads[1].items() if "wte" in n or "embed" in n)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_shared_prefill_generates_the_same_greedy_text(family: str) -> None:
    model, tok = _model(family)
    repeated = [p for p in PROMPTS for _ in range(3)]
    params = SamplingParams(16, 0.0)
    plain = generate(model, tok, repeated, params)
    shared = generate(model, tok, repeated, params, share_prompt=True)
    assert shared[0] == plain[0] and shared[1] == plain[1] and shared[2] == plain[2]


def test_shared_prompt_is_a_real_change_of_computation() -> None:
    """The check above can fail: dropping the cache expansion breaks the shapes."""
    import torch

    from fedgrpo.server import prefix

    model, _, batch = _batch("llama")
    original = prefix.distinct_rows

    def wrong(ids: Any, mask: Any) -> Any:  # every row its own prompt, then mapped to row 0
        first, inverse = original(ids, mask)
        return first, torch.zeros_like(inverse)

    prefix.distinct_rows = wrong  # type: ignore[assignment]
    try:
        with torch.no_grad():
            bad = completion_logps(model, batch.input_ids, batch.attention_mask,
                                   batch.completion_length, share_prompt=True)  # fmt: skip
    finally:
        prefix.distinct_rows = original  # type: ignore[assignment]
    with torch.no_grad():
        good = completion_logps(model, batch.input_ids, batch.attention_mask,
                                batch.completion_length)  # fmt: skip
    mask = batch.completion_mask
    assert not torch.allclose(bad * mask, good * mask, atol=1e-3)
