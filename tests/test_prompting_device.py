"""Prompts for real models (chat template + few-shot exemplars) and the server's device and
precision settings, on the tiny real models (no GPU needed: the GPU paths are checked by
what they refuse and by resolving against a stated GPU count)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from fedgrpo.edge.answer_format import make_prompt
from fedgrpo.errors import ConfigError
from fedgrpo.scenarios import mapping
from fedgrpo.scenarios.loader import validate_dict
from fedgrpo.server.device import DeviceConfig, place, prepare_model, resolve_device, resolve_dtype
from fedgrpo.server.generation import SamplingParams, generate, stop_token_ids
from fedgrpo.server.prompting import (
    PromptConfig,
    PromptFormatter,
    pick_exemplars,
    prompted_suite,
    uses_chat,
)
from fedgrpo.server.tasks import build_suite
from fedgrpo.server.zoo.architectures import TinyArch, build_tiny_model
from fedgrpo.server.zoo.tokenizer import build_char_tokenizer, wrap_for_transformers

SUITE = build_suite(["add", "sort"], seed=0, train_per_domain=20, test_per_domain=5, aux_pool_per_domain=6)
CHAT = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def tok() -> Any:
    return wrap_for_transformers(build_char_tokenizer())


@pytest.fixture(scope="module")
def chat_tok(tok: Any) -> Any:
    t = copy.deepcopy(tok)
    t.chat_template = CHAT
    return t


def test_plain_style_is_the_zoo_format_and_leaves_the_suite_alone(tok: Any) -> None:
    f = PromptFormatter(tok, PromptConfig(style="auto"), SUITE)
    assert not f.chat and f("27+48") == make_prompt("27+48")
    assert prompted_suite(SUITE, f) is SUITE


def test_chat_style_renders_same_domain_exemplars_from_the_auxiliary_pool(chat_tok: Any) -> None:
    f = PromptFormatter(chat_tok, PromptConfig(shots=2, system="SYS", rationale="worked"), SUITE)
    assert f.chat
    item = SUITE.test("add")[0]
    text = f(item.question, "add")
    exemplars = pick_exemplars(SUITE, 2, 0, ["add"])
    assert text.startswith("<system>SYS</s>") and text.endswith(f"<user>Q: {item.question}</s><assistant>")
    for ex in exemplars:
        assert ex in SUITE.aux_pool("add") and f"<assistant>{ex.completion.strip()}</s>" in text
    assert "sort" not in text  # domain exemplars: none of the other family
    equation = PromptFormatter(chat_tok, PromptConfig(shots=2, system="SYS"), SUITE)(item.question, "add")
    ex = exemplars[0]
    assert f"<assistant>{ex.question} = {ex.answer}\nanswer: {ex.answer}</s>" in equation
    mixed = PromptFormatter(chat_tok, PromptConfig(shots=2, exemplars="mixed"), SUITE)
    assert "sort" in mixed(item.question) and mixed(item.question) == mixed(item.question, "add")
    assert PromptFormatter(chat_tok, PromptConfig(shots=2, seed=1), SUITE)(item.question, "add") != text


def test_prompted_suite_changes_only_the_prompts(chat_tok: Any) -> None:
    f = PromptFormatter(chat_tok, PromptConfig(shots=1), SUITE)
    ps = prompted_suite(SUITE, f)
    for split in ("train", "test", "aux_pool"):
        before, after = getattr(SUITE, split)(), getattr(ps, split)()
        assert [(i.question, i.answer, i.domain) for i in before] == [(i.question, i.answer, i.domain) for i in after]
        assert all(a.prompt == f(a.question, a.domain) != b.prompt for a, b in zip(after, before))


def test_prompt_errors_name_the_setting(tok: Any) -> None:
    with pytest.raises(ConfigError, match=r"server\.prompt\.style is 'chat'.*no chat template"):
        uses_chat(tok, "chat")
    with pytest.raises(ConfigError, match="style"):
        PromptConfig(style="fancy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="more than the auxiliary pool"):
        pick_exemplars(SUITE, 20, 0, ["add"])


def test_scenario_prompt_and_device_fields_map_and_are_checked() -> None:
    s = validate_dict({"name": "x", "server": {"device": "cpu", "dtype": "bfloat16", "prompt": {"shots": 2, "style": "plain"}}})
    assert mapping.device_config(s) == DeviceConfig("cpu", "bfloat16", False, False)
    assert mapping.prompt_config(s).shots == 2 and mapping.prompt_config(s).style == "plain"
    default = validate_dict({"name": "x"})
    assert mapping.device_config(default) == DeviceConfig() and mapping.prompt_config(default) == PromptConfig(seed=0)
    for bad, where in ((("device", "gpu"), "server.device"), (("dtype", "fp8"), "server.dtype")):
        with pytest.raises(ConfigError, match=re.escape(where)):
            validate_dict({"name": "x", "server": {bad[0]: bad[1]}})
    with pytest.raises(ConfigError, match=r"server\.prompt\.bogus"):
        validate_dict({"name": "x", "server": {"prompt": {"bogus": 1}}})


def test_device_resolution_and_the_cuda_without_gpu_error() -> None:
    assert resolve_device("auto", gpus=0) == "cpu" and resolve_device("cpu", gpus=2) == "cpu"
    assert resolve_device("auto", gpus=2) == "cuda:0" and resolve_device("cuda:1", gpus=2) == "cuda:1"
    with pytest.raises(ConfigError, match=r"server.device: 'cuda' but torch sees no CUDA GPU.*device: auto"):
        resolve_device("cuda", gpus=0)
    with pytest.raises(ConfigError, match=r"only 2 GPU\(s\)"):
        resolve_device("cuda:2", gpus=2)
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda:0", bf16_ok=True) == "bfloat16"
    assert resolve_dtype("auto", "cuda:0", bf16_ok=False) == "float16"
    with pytest.raises(ConfigError, match=r"server\.dtype: 'float16' on the CPU"):
        resolve_dtype("float16", "cpu")


def test_cuda_on_this_machine_fails_clearly_when_torch_sees_no_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        assert place(DeviceConfig("cuda")).device == "cuda:0"
    else:
        with pytest.raises(ConfigError, match=r"server\.device"):
            place(DeviceConfig("cuda"))
        assert place(DeviceConfig()).device == "cpu"


def test_prepare_model_applies_dtype_and_checkpointing(tok: Any) -> None:
    import torch

    model = build_tiny_model(TinyArch(layers=1, hidden=32, heads=2, max_positions=64), tok, seed=0)
    cfg = DeviceConfig("cpu", "bfloat16", gradient_checkpointing=True)
    model = prepare_model(model, cfg, place(cfg))
    assert next(model.parameters()).dtype == torch.bfloat16 and model.is_gradient_checkpointing


def test_generation_stops_at_the_model_eos_as_well_as_the_tokenizer_eos(tok: Any) -> None:
    model = build_tiny_model(TinyArch(layers=1, hidden=32, heads=2, max_positions=64), tok, seed=0)
    prompts = [make_prompt("12+34")] * 3
    _, _, ids = generate(model, tok, prompts, SamplingParams(12, temperature=0.0))
    first = ids[0][0]  # greedy: the first generated token; make it a stop token
    model.generation_config.eos_token_id = first
    assert stop_token_ids(model, tok) == [tok.eos_token_id, first]
    _, _, stopped = generate(model, tok, prompts, SamplingParams(12, temperature=0.0))
    assert all(row == [first] for row in stopped) and len(ids[0]) > 1


def test_run_and_validate_report_a_missing_gpu_before_any_run_directory() -> None:
    import torch

    from fedgrpo.scenarios.checks import environment_errors

    s = validate_dict({"name": "x", "server": {"device": "cuda"}})
    problems = environment_errors(s)
    if torch.cuda.is_available():
        assert not [p for p in problems if p[0] == "server.device"]
    else:
        assert ("server.device", problems[-1][1]) == problems[-1] and "no CUDA GPU" in problems[-1][1]
    assert not [p for p in environment_errors(validate_dict({"name": "x"})) if p[0] == "server.device"]
