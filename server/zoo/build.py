"""Build (train) the zoo's models into the cache, two at a time on a 2-core machine.

On Ctrl-C (or SIGTERM raised as KeyboardInterrupt) only the parent process reacts: the
training processes ignore SIGINT, the parent terminates and joins them, removes the
``.tmp-*`` directories they were writing and re-raises. Models finished before the interrupt
stay in the cache, so the next build resumes with the rest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from pathlib import Path

from fedgrpo.edge.export_noise import LogNoise, quiet
from fedgrpo.server.zoo.cache import CacheResult, ModelCache
from fedgrpo.server.zoo.recipes import ModelRecipe, ZooSpec

log = logging.getLogger(__name__)
ANSWER_TABLE = "answers.jsonl"
# transformers says this once per training process: the tiny configs set no loss_type and
# get the causal-LM loss they need (see edge/export_noise.py for the export's noise)
TRAIN_NOISE = (
    LogNoise("transformers.modeling_utils", r"`loss_type=None` was set in the config but it is"),
)


def train_recipe(recipe: ModelRecipe, out_dir: Path) -> dict[str, object]:
    """Train ``recipe`` from scratch and save an HF directory into ``out_dir``."""
    from fedgrpo.server.zoo.architectures import build_tiny_model
    from fedgrpo.server.zoo.tokenizer import alphabet, build_char_tokenizer, wrap_for_transformers
    from fedgrpo.server.zoo.train import train_sft

    start = time.perf_counter()
    tokenizer = wrap_for_transformers(build_char_tokenizer(alphabet(recipe.tokenizer)))
    model = build_tiny_model(recipe.arch, tokenizer, recipe.seed)
    items = recipe.data.items()
    with quiet(TRAIN_NOISE):
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


Train = Callable[[ModelRecipe, Path], dict[str, object]]


def _build_one(
    recipe: ModelRecipe, root: str, threads: int, train: Train = train_recipe
) -> CacheResult:
    import torch

    torch.set_num_threads(threads)
    return ModelCache(root).get_or_build(recipe, train)


def _ignore_sigint() -> None:
    """Training processes leave Ctrl-C to the parent, which stops them cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _remove_partial(cache: ModelCache, todo: list[ModelRecipe], before: set[Path]) -> None:
    """Delete the ``.tmp-*`` entries of ``todo`` that appeared during this build."""
    for recipe in todo:
        for tmp in cache.root.glob(f".tmp-{recipe.cache_key}-*"):
            if tmp not in before:
                shutil.rmtree(tmp, ignore_errors=True)


def _build_parallel(
    cache: ModelCache,
    todo: list[ModelRecipe],
    workers: int,
    train: Train,
    on_result: Callable[[CacheResult], None],
) -> None:
    """Train ``todo`` in ``workers`` spawned processes; clean up fully on an interrupt."""
    before = set(cache.root.glob(".tmp-*")) if cache.root.exists() else set()
    pool = get_context("spawn").Pool(min(workers, len(todo)), initializer=_ignore_sigint)
    try:
        jobs = [(r, str(cache.root), 1, train) for r in todo]
        for result in pool.imap_unordered(_build_star, jobs):
            on_result(result)
        pool.close()
    except BaseException:
        pool.terminate()
        pool.join()
        _remove_partial(cache, todo, before)
        raise
    pool.join()


def _build_star(job: tuple[ModelRecipe, str, int, Train]) -> CacheResult:
    return _build_one(*job)


def build_zoo(
    spec: ZooSpec | Sequence[ModelRecipe],
    models_dir: str | os.PathLike[str],
    workers: int = 2,
    on_done: Callable[[CacheResult], None] | None = None,
    train: Train = train_recipe,
) -> dict[str, CacheResult]:
    """Get or build every model of ``spec`` (a zoo or its recipes); results by model name.

    Cache hits are resolved in-process; misses train in ``workers`` spawned processes with
    one torch thread each (faster than one process with two threads for models this small).
    ``train`` (a module-level function, so spawned processes can import it) trains one recipe.
    """
    cache = ModelCache(models_dir)
    recipes = spec.recipes() if isinstance(spec, ZooSpec) else list(spec)
    results: dict[str, CacheResult] = {}
    todo: list[ModelRecipe] = []
    for recipe in recipes:
        if cache.verify(recipe) is None:
            results[recipe.name] = CacheResult(recipe, cache.path_for(recipe), "hit", 0.0)
            if on_done:
                on_done(results[recipe.name])
        else:
            todo.append(recipe)

    def store(result: CacheResult) -> None:
        results[result.recipe.name] = result
        if on_done:
            on_done(result)

    if todo and workers <= 1:
        for recipe in todo:
            store(_build_one(recipe, str(cache.root), os.cpu_count() or 1, train))
    elif todo:
        _build_parallel(cache, todo, workers, train, store)
    return {r.name: results[r.name] for r in recipes}
