"""Hugging Face causal LM -> edge export directory (workstation side; needs torch + optimum).

Output directory (copy it whole to the device)::

    model.onnx         fp32 scoring graph (reference; full-sequence logits, no KV cache)
    model.int8.onnx    dynamic int8           (if requested)
    model.int4.onnx    weight-only int4       (if requested)
    tokenizer.json     the model's fast tokenizer (loaded with ``tokenizers`` alone)
    answers.jsonl      optional local answer table for AE rewards
    manifest.json      source, sha256 per file, opset, variants, vocab, max length...

The directory is assembled in a temporary sibling and renamed into place, so an interrupted
export never leaves a directory that looks complete. Only :mod:`edge.cli`'s ``export``
subcommand imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.edge.answer_table import AnswerTable
from fedgrpo.edge.export_noise import quiet_export
from fedgrpo.edge.manifest import (
    ANSWERS_NAME,
    MANIFEST_NAME,
    TOKENIZER_NAME,
    VARIANTS,
    Manifest,
    sha256_file,
    variant_filename,
)
from fedgrpo.edge.protocol import REWARD_MODES
from fedgrpo.edge.quantize import QuantOptions, quantize_int4, quantize_int8

log = logging.getLogger(__name__)
EXPORT_EXTRA_HINT = "pip install 'fedgrpo[export]'"


def _require_export_deps() -> Any:
    """``optimum.exporters.onnx.main_export``, or an ImportError that names the extra."""
    try:
        import onnx  # noqa: F401
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise ImportError(
            f"exporting needs torch, transformers, optimum-onnx and onnx ({exc}); "
            f"on a workstation run: {EXPORT_EXTRA_HINT}"
        ) from exc
    return main_export


def _resolve_source(source: str) -> str:
    """Local directory or hub id as given; ``builtin:NAME`` materialised first."""
    from fedgrpo.edge.builtin_models import resolve_builtin

    return resolve_builtin(source)


def _config_facts(export_dir: Path, max_length: int | None) -> dict[str, Any]:
    config = json.loads((export_dir / "config.json").read_text(encoding="utf-8"))
    positions = (
        config.get("n_positions")
        or config.get("max_position_embeddings")
        or config.get("n_ctx")
        or 2048
    )
    eos = config.get("eos_token_id")
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    pad = config.get("pad_token_id")
    if isinstance(pad, list):
        pad = pad[0] if pad else None
    return {
        "model_type": str(config.get("model_type", "unknown")),
        "vocab_size": int(config["vocab_size"]),
        "max_length": int(min(positions, max_length) if max_length else positions),
        "eos_token_id": eos,
        "pad_token_id": pad,
    }


def _ensure_tokenizer(source: str, export_dir: Path) -> None:
    """optimum copies tokenizer.json when the source has a fast tokenizer; otherwise convert."""
    if (export_dir / TOKENIZER_NAME).is_file():
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    tokenizer.save_pretrained(export_dir)
    if not (export_dir / TOKENIZER_NAME).is_file():
        raise ValueError(
            f"{source} has no fast tokenizer (tokenizer.json); the edge runtime needs one"
        )


def _graph_facts(path: Path) -> tuple[int, list[str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return int(opset), [i.name for i in model.graph.input]


def _find_answers(source: str, answers: Path | None) -> Path | None:
    if answers is not None:
        if not answers.is_file():
            raise FileNotFoundError(f"answer table {answers} does not exist")
        return answers
    candidate = Path(source) / ANSWERS_NAME
    return candidate if candidate.is_file() else None


def export_model(
    source: str,
    out_dir: str | os.PathLike[str],
    quantize: Sequence[str] = ("int8",),
    options: QuantOptions | None = None,
    answers: Path | None = None,
    include_source_answers: bool = True,
    opset: int | None = None,
    max_length: int | None = None,
    validate: bool = False,
    overwrite: bool = False,
) -> Manifest:
    """Export ``source`` (HF directory, hub id or ``builtin:NAME``) into ``out_dir``.

    ``quantize`` lists extra variants (fp32 is always written: it is the fidelity reference).
    ``answers`` is a JSONL answer table; by default a source directory's own
    ``answers.jsonl`` (the zoo's experts have one) is carried over.
    """
    main_export = _require_export_deps()
    options = options or QuantOptions()
    out = Path(out_dir)
    _check_request(quantize, out, overwrite)
    resolved = _resolve_source(source)
    table_path = _find_answers(resolved, answers) if (answers or include_source_answers) else None
    table = AnswerTable.load(table_path) if table_path else None  # fail before the slow part
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        raw = staging / "optimum"
        with quiet_export():  # third-party noise only (edge/export_noise.py says which)
            _optimum_export(main_export, resolved, raw, opset, validate)
        final = staging / "final"
        final.mkdir()
        shutil.copy2(raw / "model.onnx", final / "model.onnx")
        shutil.copy2(raw / TOKENIZER_NAME, final / TOKENIZER_NAME)
        facts = _config_facts(raw, max_length)
        if facts["pad_token_id"] is None:
            facts["pad_token_id"] = facts["eos_token_id"]
        with quiet_export():
            variants = _write_variants(final, quantize, options)
        if table_path is not None:
            shutil.copy2(table_path, final / ANSWERS_NAME)
        manifest = _manifest(source, final, variants, table, facts)
        manifest.write(final)
        if out.exists():
            shutil.rmtree(out)
        os.replace(final, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _check_request(quantize: Sequence[str], out: Path, overwrite: bool) -> None:
    """Refuse unknown variants, and replacing a non-empty directory that is not an edge
    export (unless told to)."""
    unknown = [q for q in quantize if q not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown quantisation {unknown}; use {', '.join(VARIANTS)}")
    if (
        out.exists()
        and any(out.iterdir())
        and not overwrite
        and not (out / MANIFEST_NAME).is_file()
    ):
        raise FileExistsError(f"{out} exists and is not an edge export; choose another --out")


def _optimum_export(
    main_export: Any, resolved: str, raw: Path, opset: int | None, validate: bool
) -> None:
    """optimum's ONNX export of ``resolved`` into ``raw``, with a fast tokenizer beside it;
    a model too large for one ONNX file (external data) is refused."""
    main_export(
        resolved,
        raw,
        task="text-generation",
        opset=opset,
        do_validation=validate,
        library_name="transformers",
    )
    if any(raw.glob("*.onnx_data")) or any(raw.glob("*.onnx.data")):
        raise ValueError(
            "the model exported with external data (> 2 GB); too large for an edge device"
        )
    _ensure_tokenizer(resolved, raw)


def _write_variants(
    final: Path, quantize: Sequence[str], options: QuantOptions
) -> dict[str, dict[str, Any]]:
    """Quantise ``final/model.onnx`` into each requested variant; variant → file, quantisation
    settings and size (fp32, the reference, always included)."""
    variants: dict[str, dict[str, Any]] = {"fp32": {"file": "model.onnx", "quantization": None}}
    for variant in dict.fromkeys(quantize):
        if variant == "fp32":
            continue
        target = final / variant_filename(variant)
        log.info("quantising to %s -> %s", variant, target.name)
        quantizer = quantize_int8 if variant == "int8" else quantize_int4
        variants[variant] = {
            "file": target.name,
            "quantization": quantizer(final / "model.onnx", target, options),
        }
    for info in variants.values():
        info["size_bytes"] = (final / info["file"]).stat().st_size
    return variants


def _manifest(
    source: str,
    final: Path,
    variants: dict[str, dict[str, Any]],
    table: AnswerTable | None,
    facts: dict[str, Any],
) -> Manifest:
    """The manifest of the assembled directory ``final`` (sha256 of every file in it)."""
    opset_used, graph_inputs = _graph_facts(final / "model.onnx")
    files = {p.name: sha256_file(p) for p in sorted(final.iterdir()) if p.is_file()}
    return Manifest(
        source_model=str(source),
        variants=variants,
        files=files,
        opset=opset_used,
        graph_inputs=graph_inputs,
        reward_modes=list(REWARD_MODES),
        answers_sha256=files.get(ANSWERS_NAME),
        answers_count=len(table) if table is not None else 0,
        exporter=_versions(),
        **facts,
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for package in ("torch", "transformers", "optimum-onnx", "onnx", "onnxruntime"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found
