"""``--models-dir``: one flag, one rule, on every command that needs models.

The flag wins over ``$FEDGRPO_MODELS_DIR``, which wins over ``./models``; the choice is
exported to ``FEDGRPO_MODELS_DIR`` so the run's code and its worker processes (sweeps, model
builds) all use the same cache."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["ENV", "add_models_dir", "current", "resolve_models_dir"]

ENV = "FEDGRPO_MODELS_DIR"


def add_models_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"model cache directory (default: ${ENV} if set, else ./models)",
    )


def current() -> Path:
    """The model cache now: ``$FEDGRPO_MODELS_DIR`` if set (and not empty), else ``./models``."""
    return Path(os.environ.get(ENV) or "models")


def resolve_models_dir(args: argparse.Namespace) -> None:
    """Set ``args.models_dir`` (when the command has the flag) and export it."""
    if not hasattr(args, "models_dir"):
        return
    chosen = args.models_dir or current()
    args.models_dir = chosen
    os.environ[ENV] = str(chosen)
