"""Export directories: contents, manifest, checksums, quantised graphs, refusal cases."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import onnx
import pytest
from edge_reference import TinyBuild

from fedgrpo.edge.cli import main
from fedgrpo.edge.manifest import Manifest, ManifestError, sha256_file
from fedgrpo.edge.protocol import REWARD_MODES
from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig

pytest_plugins = ["edge_fixtures"]


def test_export_directory_and_manifest(gpt2_build: TinyBuild) -> None:
    out = gpt2_build.export_dir
    names = {p.name for p in out.iterdir()}
    assert names == {
        "model.onnx",
        "model.int8.onnx",
        "model.int4.onnx",
        "tokenizer.json",
        "answers.jsonl",
        "manifest.json",
    }
    manifest = Manifest.read(out)
    assert manifest.source_model == str(gpt2_build.hf_dir)
    assert manifest.model_type == "gpt2"
    assert manifest.vocab_size == len(gpt2_build.tokenizer)
    assert manifest.max_length == 96
    assert manifest.eos_token_id == gpt2_build.tokenizer.eos_token_id
    assert manifest.pad_token_id == gpt2_build.tokenizer.pad_token_id
    assert manifest.opset >= 14
    assert set(manifest.graph_inputs) >= {"input_ids", "attention_mask"}
    assert manifest.reward_modes == list(REWARD_MODES)
    assert set(manifest.variants) == {"fp32", "int8", "int4"}
    assert manifest.answers_count == len(gpt2_build.table_items)
    assert manifest.answers_sha256 == sha256_file(out / "answers.jsonl")
    for name, digest in manifest.files.items():
        assert sha256_file(out / name) == digest
    assert "manifest.json" not in manifest.files
    sizes = {v: info["size_bytes"] for v, info in manifest.variants.items()}
    assert sizes["int8"] < sizes["fp32"] and sizes["int4"] < sizes["fp32"]


def test_quantised_graphs_use_quantised_operators(gpt2_build: TinyBuild) -> None:
    int8 = Counter(
        n.op_type for n in onnx.load(str(gpt2_build.export_dir / "model.int8.onnx")).graph.node
    )
    int4 = Counter(
        n.op_type for n in onnx.load(str(gpt2_build.export_dir / "model.int4.onnx")).graph.node
    )
    assert int8["MatMulInteger"] + int8["DynamicQuantizeMatMul"] > 0
    # GPT-2's Conv1D Gemms are rewritten to MatMul so MatMulNBits covers them, plus the LM head.
    manifest = Manifest.read(gpt2_build.export_dir)
    info = manifest.variants["int4"]["quantization"]
    assert int4["MatMulNBits"] == info["matmuls_quantized"] >= 2 * 3 + 1
    assert info["gemms_rewritten"] >= 6


def test_corrupted_copy_is_refused_at_load(gpt2_build: TinyBuild, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(gpt2_build.export_dir, copy)
    data = bytearray((copy / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256"):
        EdgeScorer.load(copy, ScorerConfig(variant="int8"))
    EdgeScorer.load(copy, ScorerConfig(variant="fp32"))  # the intact variant still loads
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ManifestError, match="missing"):
        EdgeScorer.load(copy, ScorerConfig(variant="fp32"))


def test_missing_variant_and_non_export_dir(llama_build: TinyBuild, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="int4"):
        EdgeScorer.load(llama_build.export_dir, ScorerConfig(variant="int4"))
    with pytest.raises(ManifestError, match="manifest"):
        EdgeScorer.load(tmp_path, ScorerConfig())


def test_export_refuses_to_clobber_other_directories(gpt2_build: TinyBuild, tmp_path: Path) -> None:
    from fedgrpo.edge.export import export_model

    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        export_model(str(gpt2_build.hf_dir), tmp_path, quantize=())
    with pytest.raises(ValueError, match="int3"):
        export_model(str(gpt2_build.hf_dir), tmp_path / "new", quantize=("int3",))
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "new").exists()


def test_cli_export_with_explicit_answers_and_info(
    llama_build: TinyBuild, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = tmp_path / "mine.jsonl"
    answers.write_text(json.dumps({"question": "2+2", "answer": "4"}) + "\n")
    out = tmp_path / "exp"
    with pytest.warns():  # torch.onnx tracer warnings
        code = main(["export", "--model", str(llama_build.hf_dir), "--out", str(out),
                     "--quantize", "fp32", "--answers", str(answers)])  # fmt: skip
    assert code == 0
    manifest = Manifest.read(out)
    assert set(manifest.variants) == {"fp32"} and manifest.answers_count == 1
    assert (out / "answers.jsonl").read_text() == answers.read_text()
    capsys.readouterr()
    assert main(["info", str(out), "--verify"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["answers_count"] == 1
    assert "files match" in captured.err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "2+2", "answer": "four"}\n')
    assert main(["export", "--model", str(llama_build.hf_dir), "--out", str(tmp_path / "x"),
                 "--answers", str(bad)]) == 2  # fmt: skip
    assert "not an answer the device can read" in capsys.readouterr().err
