"""Model cache hit / miss / corruption with a real (tiny, briefly trained) model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedgrpo.server.zoo.architectures import TinyArch
from fedgrpo.server.zoo.build import ANSWER_TABLE, build_zoo
from fedgrpo.server.zoo.cache import MANIFEST, ModelCache
from fedgrpo.server.zoo.recipes import PartitionSpec, SuiteSpec, ZooSpec
from fedgrpo.server.zoo.train import TrainConfig

TINY = TinyArch(layers=1, hidden=32, heads=2, max_positions=64)
SPEC = ZooSpec(
    suite=SuiteSpec(domains=("add", "sort"), train_per_domain=40, test_per_domain=10, aux_pool_per_domain=10),
    partition=PartitionSpec(num_clients=2),
    expert_arch=TINY,
    expert_train=TrainConfig(steps=3, batch_size=8),
    base_arch=TINY,
    base_train=TrainConfig(steps=3, batch_size=8),
)


def test_build_then_hit_then_corruption_is_rebuilt(tmp_path: Path) -> None:
    first = build_zoo(SPEC, tmp_path, workers=1)
    assert [r.status for r in first.values()] == ["built", "built", "built"]
    expert = first["expert-0"].path
    for name in ("config.json", "model.safetensors", "tokenizer.json", ANSWER_TABLE, MANIFEST):
        assert (expert / name).is_file()
    rows = [json.loads(line) for line in (expert / ANSWER_TABLE).read_text().splitlines()]
    assert {r["domain"] for r in rows} == {"add"}  # client 0 holds domain add only

    second = build_zoo(SPEC, tmp_path, workers=1)
    assert [r.status for r in second.values()] == ["hit", "hit", "hit"]

    original_sha = json.loads((expert / MANIFEST).read_text())["files"]["model.safetensors"]
    weights = expert / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    cache = ModelCache(tmp_path)
    assert "checksum" in (cache.verify(first["expert-0"].recipe) or "")
    third = build_zoo(SPEC, tmp_path, workers=1)
    assert third["expert-0"].status == "rebuilt" and third["expert-1"].status == "hit"
    assert cache.verify(third["expert-0"].recipe) is None
    # training is deterministic: the rebuilt weights equal the original ones
    assert json.loads((expert / MANIFEST).read_text())["files"]["model.safetensors"] == original_sha


def test_recipe_change_is_a_miss_and_missing_manifest_is_detected(tmp_path: Path) -> None:
    build_zoo(SPEC, tmp_path, workers=1)
    other = ZooSpec(**{**SPEC.__dict__, "seed": 7})
    statuses = {n: r.status for n, r in build_zoo(other, tmp_path, workers=1).items()}
    assert set(statuses.values()) == {"built"}
    recipe = other.recipes()[0]
    (ModelCache(tmp_path).path_for(recipe) / MANIFEST).unlink()
    assert ModelCache(tmp_path).verify(recipe) == "manifest unreadable (FileNotFoundError)"


def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    recipe = SPEC.recipes()[0]

    def boom(_recipe: object, out: Path) -> dict[str, object]:
        (out / "partial.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.get_or_build(recipe, boom)
    assert cache.verify(recipe) == "missing"
    assert not list(tmp_path.glob(".tmp-*"))


def test_loaded_model_round_trips_through_load_causal_lm(tmp_path: Path) -> None:
    from fedgrpo.server.zoo.loading import load_causal_lm

    results = build_zoo(SPEC, tmp_path, workers=1)
    model, tok = load_causal_lm(str(results["server-base"].path))
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    ids = tok("Q: 1+2\nA:")["input_ids"]
    assert model(input_ids=__import__("torch").tensor([ids])).logits.shape[-1] == len(tok)


def test_unknown_sources_fail_with_a_clear_error() -> None:
    from fedgrpo.errors import ModelSourceError
    from fedgrpo.server.zoo.loading import load_causal_lm

    with pytest.raises(ModelSourceError, match=r"no model hub is reachable|does not exist"):
        load_causal_lm("./definitely/not/here")
    with pytest.raises(ModelSourceError, match=r"unknown built-in model 'gpt5'"):
        load_causal_lm("builtin:gpt5")
