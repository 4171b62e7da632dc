"""Build (train) the zoo's models into the cache, two at a time on a 2-core machine."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from fedgrpo.server.zoo.cache import CacheResult, ModelCache
from fedgrpo.server.zoo.recipes import ModelRecipe, ZooSpec

log = logging.getLogger(__name__)
ANSWER_TABLE = "answers.jsonl"


def train_recipe(recipe: ModelRecipe, out_dir: Path) -> dict[str, object]:
    """Train ``recipe`` from scratch and save an HF directory into ``out_dir``."""
    from fedgrpo.server.zoo.architectures import build_tiny_model
    from fedgrpo.server.zoo.tokenizer import build_char_tokenizer, wrap_for_transformers
    from fedgrpo.server.zoo.train import train_sft

    start = time.perf_counter()
    tokenizer = wrap_for_transformers(build_char_tokenizer())
    model = build_tiny_model(recipe.arch, tokenizer, recipe.seed)
    items = recipe.data.items()
    losses = train_sft(
        model, tokenizer, [(i.prompt, i.completion) for i in items], recipe.train, recipe.seed
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if recipe.role == "expert":
        # The client's private labelled data, used on-device for answer-based (AE) rewards.
        with (out_dir / ANSWER_TABLE).open("w") as fh:
            for item in items:
                fh.write(
                    json.dumps(
                        {"question": item.question, "answer": item.answer, "domain": item.domain}
                    )
                    + "\n"
                )
    return {
        "train_seconds": round(time.perf_counter() - start, 2),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 5),
        "num_items": len(items),
        "domains": dict(Counter(i.domain for i in items)),
    }


def _build_one(recipe: ModelRecipe, root: str, threads: int) -> CacheResult:
    import torch

    torch.set_num_threads(threads)
    return ModelCache(root).get_or_build(recipe, train_recipe)


def build_zoo(
    spec: ZooSpec,
    models_dir: str | os.PathLike[str],
    workers: int = 2,
    on_done: Callable[[CacheResult], None] | None = None,
) -> dict[str, CacheResult]:
    """Get or build every model of ``spec``; returns results by model name.

    Cache hits are resolved in-process; misses train in ``workers`` spawned processes with
    one torch thread each (faster than one process with two threads for models this small).
    """
    cache = ModelCache(models_dir)
    recipes = spec.recipes()
    results: dict[str, CacheResult] = {}
    todo: list[ModelRecipe] = []
    for recipe in recipes:
        if cache.verify(recipe) is None:
            results[recipe.name] = CacheResult(recipe, cache.path_for(recipe), "hit", 0.0)
            if on_done:
                on_done(results[recipe.name])
        else:
            todo.append(recipe)
    if todo and workers <= 1:
        for recipe in todo:
            results[recipe.name] = _build_one(recipe, str(cache.root), threads=os.cpu_count() or 1)
            if on_done:
                on_done(results[recipe.name])
    elif todo:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_build_one, r, str(cache.root), 1) for r in todo]
            for future in as_completed(futures):
                result = future.result()
                results[result.recipe.name] = result
                if on_done:
                    on_done(result)
    return {r.name: results[r.name] for r in recipes}
