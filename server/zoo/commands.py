"""`fedgrpo models build|eval` — the zoo's command-line face (also used by `fedgrpo demo`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fedgrpo.server.zoo.cache import CacheResult
from fedgrpo.server.zoo.recipes import ModelRecipe, ZooSpec


def build_default_zoo(
    models_dir: Path,
    spec: ZooSpec | Sequence[ModelRecipe] | None = None,
    workers: int = 2,
    prebuild_hint: bool = True,
) -> dict[str, CacheResult]:
    """Get or train ``spec``'s models (a zoo, or recipes), saying first what will be trained
    and about how long it takes (:mod:`fedgrpo.server.zoo.plan`)."""
    from tqdm import tqdm

    from fedgrpo.server.zoo.build import build_zoo
    from fedgrpo.server.zoo.plan import announcement, plan_build

    spec = spec or ZooSpec()
    recipes = spec.recipes() if isinstance(spec, ZooSpec) else list(spec)
    notice = announcement(plan_build(recipes, models_dir, workers), models_dir, prebuild_hint)
    if notice:
        print(notice, file=sys.stderr, flush=True)
    start = time.perf_counter()
    with tqdm(total=len(recipes), desc="models", unit="model", disable=None) as bar:  # TTY only

        def done(result: CacheResult) -> None:
            bar.set_postfix_str(f"{result.recipe.name}: {result.status}")
            bar.update(1)

        results = build_zoo(recipes, models_dir, workers=workers, on_done=done)
    built = sum(r.status != "hit" for r in results.values())
    print(
        f"[fedgrpo] {len(results)} models ready in {models_dir} "
        f"({built} trained, {len(results) - built} from cache) in {time.perf_counter() - start:.1f}s"
    )
    for name, res in results.items():
        print(f"  {name:12s} {res.status:8s} {res.path}")
    return results


def evaluate_zoo(
    results: dict[str, CacheResult], spec: ZooSpec | None = None, per_domain: int | None = None,
    out_json: Path | None = None,
) -> dict[str, dict[str, object]]:
    import torch

    from fedgrpo.server.zoo.evaluate import evaluate_on_suite, format_table
    from fedgrpo.server.zoo.loading import load_causal_lm

    spec = spec or ZooSpec()
    torch.set_num_threads(2)
    suite = spec.suite.build()
    evals = {}
    for name, res in results.items():
        model, tok = load_causal_lm(str(res.path))
        evals[name] = evaluate_on_suite(model, tok, suite, per_domain)
    print(format_table(evals, suite.domains))
    table = {name: ev.to_dict() for name, ev in evals.items()}
    for name, res in results.items():
        manifest = json.loads((res.path / "fedgrpo_manifest.json").read_text())
        table[name]["train_domains"] = manifest["build"].get("domains", {})
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(table, indent=2))
        print(f"[fedgrpo] eval table saved to {out_json}")
    return table
