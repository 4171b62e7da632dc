"""``manifest.json`` of an exported edge model directory.

The manifest is how a device knows what it was given without torch or transformers: which
ONNX variants exist, their checksums (a half-copied file to a Pi is caught at load time, not
as garbage rewards), the vocabulary and context size, and the hash of the local answer table.
Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
ANSWERS_NAME = "answers.jsonl"
MANIFEST_FORMAT = 1
VARIANTS = ("fp32", "int8", "int4")


def variant_filename(variant: str) -> str:
    """``model.onnx`` for fp32, ``model.<variant>.onnx`` for quantised graphs."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
    return "model.onnx" if variant == "fp32" else f"model.{variant}.onnx"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (models can be hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ManifestError(ValueError):
    """The export directory is missing, incomplete, corrupted or of an unknown format."""


@dataclass
class Manifest:
    """What an export directory holds. ``files`` maps file name to sha256."""

    source_model: str
    model_type: str
    vocab_size: int
    max_length: int
    opset: int
    eos_token_id: int | None
    pad_token_id: int | None
    variants: dict[str, dict[str, Any]]
    files: dict[str, str]
    reward_modes: list[str]
    graph_inputs: list[str]
    answers_sha256: str | None = None
    answers_count: int = 0
    format: int = MANIFEST_FORMAT
    exporter: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ManifestError(
                f"{directory} has no {MANIFEST_NAME}; is it a 'fedgrpo-edge export' output directory?"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read {path}: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
            raise ManifestError(
                f"{path} has manifest format {raw.get('format') if isinstance(raw, dict) else None!r}; "
                f"this runtime reads format {MANIFEST_FORMAT}. Re-export with this version."
            )
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as exc:
            raise ManifestError(f"{path} is missing fields: {exc}") from exc

    def verify_file(self, directory: Path, name: str) -> None:
        """Raise :class:`ManifestError` if ``name`` is missing or differs from its checksum."""
        expected = self.files.get(name)
        path = Path(directory) / name
        if expected is None:
            raise ManifestError(f"{name} is not listed in {directory / MANIFEST_NAME}")
        if not path.is_file():
            raise ManifestError(f"{path} is missing; copy the whole export directory")
        if sha256_file(path) != expected:
            raise ManifestError(
                f"{path} does not match its sha256 in the manifest (truncated or corrupted copy?)"
            )
