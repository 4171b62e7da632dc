"""--models-dir on every command that needs models; the flag wins over $FEDGRPO_MODELS_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedgrpo.experiments.cli import build_parser
from fedgrpo.experiments.models_dir import ENV, resolve_models_dir

COMMANDS = [
    ["demo"],
    ["run", "x.yaml"],
    ["sweep", "x.yaml", "--grid", "seed=1,2"],
    ["models", "build"],
    ["models", "eval"],
    ["graph", "show", "x.yaml"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a))
def test_flag_beats_environment_beats_default(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parser = build_parser()
    monkeypatch.setenv(ENV, "/from/env")
    args = parser.parse_args([*argv, "--models-dir", "/from/flag"])
    resolve_models_dir(args)
    assert args.models_dir == Path("/from/flag") and os.environ[ENV] == "/from/flag"
    args = parser.parse_args(argv)
    resolve_models_dir(args)
    assert args.models_dir == Path("/from/flag")  # the exported choice
    monkeypatch.delenv(ENV)
    args = parser.parse_args(argv)
    resolve_models_dir(args)
    assert args.models_dir == Path("models") and os.environ[ENV] == "models"
