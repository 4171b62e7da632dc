"""A content-addressed cache of built models with corruption detection.

Layout: ``<root>/<name>-<recipe hash>/`` holds a normal Hugging Face model directory
(``config.json``, ``model.safetensors``, ``tokenizer.json``...), the client's private
``answers.jsonl`` for experts, ``recipe.json`` and ``fedgrpo_manifest.json`` with a sha256 per
file. An entry is written to a temporary directory and renamed into place, so a crash never
leaves a half-written entry that looks valid; a manifest mismatch means corrupted and rebuilt.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedgrpo.edge.manifest import sha256_file
from fedgrpo.errors import ModelCacheError
from fedgrpo.server.zoo.recipes import ModelRecipe

MANIFEST = "fedgrpo_manifest.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheResult:
    recipe: ModelRecipe
    path: Path
    status: str  # "hit", "built" or "rebuilt"
    seconds: float


class ModelCache:
    """Get-or-build models keyed by recipe hash under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, recipe: ModelRecipe) -> Path:
        return self.root / recipe.cache_key

    def verify(self, recipe: ModelRecipe) -> str | None:
        """``None`` if the entry is intact, else why it is not (missing, corrupted...)."""
        path = self.path_for(recipe)
        manifest_path = path / MANIFEST
        if not path.exists():
            return "missing"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            return f"manifest unreadable ({exc.__class__.__name__})"
        if manifest.get("recipe_digest") != recipe.digest():
            return "manifest belongs to another recipe"
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            return "manifest lists no files"
        for name, expected in files.items():
            file_path = path / name
            if not file_path.is_file():
                return f"file {name} is missing"
            if sha256_file(file_path) != expected:
                return f"file {name} does not match its checksum"
        return None

    def get_or_build(
        self, recipe: ModelRecipe, build: Callable[[ModelRecipe, Path], dict[str, object]]
    ) -> CacheResult:
        """Return the cached entry, or call ``build(recipe, tmp_dir)`` and store its output."""
        start = time.perf_counter()
        if self.verify(recipe) is None:
            return CacheResult(recipe, self.path_for(recipe), "hit", time.perf_counter() - start)
        self.root.mkdir(parents=True, exist_ok=True)
        # One builder per entry across processes (parallel test workers, two runs sharing a
        # models dir): the others wait, then find the entry built.
        with open(self.root / f".lock-{recipe.cache_key}", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            problem = self.verify(recipe)
            if problem is None:
                path = self.path_for(recipe)
                return CacheResult(recipe, path, "hit", time.perf_counter() - start)
            return self._build(recipe, build, problem, start)

    def _build(
        self,
        recipe: ModelRecipe,
        build: Callable[[ModelRecipe, Path], dict[str, object]],
        problem: str,
        start: float,
    ) -> CacheResult:
        status = "built" if problem == "missing" else "rebuilt"
        if status == "rebuilt":
            log.warning("cache entry %s is corrupted (%s); rebuilding", recipe.cache_key, problem)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{recipe.cache_key}-", dir=self.root))
        try:
            info = build(recipe, tmp)
            (tmp / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2, sort_keys=True))
            files = {
                p.relative_to(tmp).as_posix(): sha256_file(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            manifest = {
                "recipe_digest": recipe.digest(),
                "name": recipe.name,
                "role": recipe.role,
                "files": files,
                "build": info,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            final = self.path_for(recipe)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if self.verify(recipe) is not None:
            raise ModelCacheError(
                f"model {recipe.cache_key} failed verification right after building; "
                f"check free disk space under {self.root}"
            )
        return CacheResult(recipe, self.path_for(recipe), status, time.perf_counter() - start)

    def manifest(self, recipe: ModelRecipe) -> dict[str, object]:
        return dict(json.loads((self.path_for(recipe) / MANIFEST).read_text()))
