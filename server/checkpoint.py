"""Checkpoint files that cannot silently corrupt a run.

Layout of a checkpoint directory::

    round-00010.pt          torch.save payload, written to a temp file and renamed
    round-00010.pt.sha256   its sha256 (written before the rename of the .pt)
    latest.json             {"path": "round-00010.pt", "round": 10, "sha256": ...}

Reading tries every ``round-*.pt`` from the newest down. A file is used only if its checksum matches and it unpickles; a damaged one is skipped
with a message naming it and the file used instead. No good checkpoint raises
:class:`CheckpointError` listing every file and why it was refused: never a traceback from
torch, never a silent restart, never a garbage model.

The loader (``torch.load``) is passed in, so this module is pure file handling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedgrpo.errors import FedGRPOError

log = logging.getLogger(__name__)
LATEST = "latest.json"
PATTERN = "round-*.pt"


class CheckpointError(FedGRPOError):
    """No usable checkpoint where one was expected."""


@dataclass
class Loaded:
    payload: dict[str, Any]
    path: Path
    skipped: list[str] = field(default_factory=list)  # "file: reason" of refused files


def checkpoint_name(round_index: int) -> str:
    return f"round-{round_index:05d}.pt"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_checkpoint(directory: Path, round_index: int, blob: bytes) -> Path:
    """Write one serialised checkpoint atomically with its checksum; point latest at it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(round_index)
    digest = sha256_bytes(blob)
    _atomic_write(path.with_name(path.name + ".sha256"), (digest + "\n").encode())
    _atomic_write(path, blob)
    latest = {"path": path.name, "round": round_index, "sha256": digest}
    _atomic_write(directory / LATEST, json.dumps(latest).encode())
    return path


def has_checkpoint(directory: Path) -> bool:
    return (directory / LATEST).exists() or any(directory.glob(PATTERN))


def _candidates(directory: Path) -> tuple[list[Path], list[str]]:
    """Checkpoint files newest first. ``latest.json`` is a pointer for people and tools: a
    complete newer file (killed before latest.json was renamed) wins over it, and a broken
    latest.json is only noted."""
    notes: list[str] = []
    latest = directory / LATEST
    if latest.exists():
        try:
            json.loads(latest.read_text())["path"]
        except (ValueError, KeyError, TypeError, OSError) as exc:
            notes.append(f"{latest.name}: unreadable ({type(exc).__name__}), ignored")
    return sorted(directory.glob(PATTERN), reverse=True), notes


def _refusal(path: Path) -> tuple[bytes | None, str | None]:
    """(bytes, None) for a file whose checksum matches, else (None, why not)."""
    if not path.is_file():
        return None, "missing"
    data = path.read_bytes()
    if not data:
        return None, "empty (0 bytes)"
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return None, f"no checksum file {sidecar.name}"
    want = sidecar.read_text().strip()
    if sha256_bytes(data) != want:
        return None, f"checksum mismatch ({len(data)} bytes; damaged or truncated)"
    return data, None


def read_checkpoint(directory: Path, load: Callable[[bytes], dict[str, Any]]) -> Loaded:
    """The newest good checkpoint in ``directory`` (see the module docstring)."""
    order, skipped = _candidates(directory)
    for path in order:
        data, why = _refusal(path)
        if data is None:
            skipped.append(f"{path.name}: {why}")
            continue
        try:
            payload = load(data)
        except Exception as exc:  # any unpickling failure means: do not trust this file
            skipped.append(f"{path.name}: does not load ({type(exc).__name__}: {exc})")
            continue
        if skipped:
            log.warning(
                "checkpoint fallback in %s: %s; resuming from %s instead",
                directory, "; ".join(skipped), path.name,
            )
        return Loaded(payload, path, skipped)
    tried = "; ".join(skipped) if skipped else "no checkpoint files"
    raise CheckpointError(
        f"no good checkpoint in {directory} ({tried}); start the run afresh without --resume "
        "(or restore the files from a backup)"
    )


def prune(directory: Path, keep: int) -> None:
    """Keep the newest ``keep`` checkpoints (at least one) and their checksum files."""
    files = sorted(directory.glob(PATTERN))
    for old in files[: max(0, len(files) - max(1, keep))]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
