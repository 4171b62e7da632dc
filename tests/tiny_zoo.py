"""The tiny test zoo: ``fedgrpo.experiments.context.zoo_spec`` shrunk to 1-layer, 32-wide
models trained for a few steps, so end-to-end tests build a whole zoo in seconds. One helper
for every test that runs the real runner (in process or as ``tests/resume_driver.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fedgrpo.server.zoo.architectures import TinyArch
from fedgrpo.server.zoo.train import TrainConfig

TINY = TinyArch(layers=1, hidden=32, heads=2, max_positions=128)
QUICK = TrainConfig(steps=3, batch_size=8)


def tiny_spec(
    real: Callable[[Any], Any],
    *,
    weak_steps: int | None = None,
    base_train: TrainConfig = QUICK,
    sized: bool = False,
) -> Callable[[Any], Any]:
    """``real`` (the real ``zoo_spec``) with tiny models; ``weak_steps`` for the weak
    experts (None: the recipe's), ``base_train`` for the server base, ``sized``: dataset
    zoos get positions for their long rows (``context.sized_for_data``)."""
    import fedgrpo.experiments.context as context

    def spec(s: Any) -> Any:
        extra = {} if weak_steps is None else {"weak_steps": weak_steps}
        out = replace(real(s), expert_arch=TINY, expert_train=QUICK, base_arch=TINY,
                      base_train=base_train, **extra)  # fmt: skip
        if sized and out.suite.source is not None:
            return context.sized_for_data(out, s.server.grpo.max_new_tokens)
        return out

    return spec


def use_tiny_zoo(monkeypatch: Any, models_dir: Any, **kwargs: Any) -> None:
    """Patch the runner's zoo to :func:`tiny_spec` and point ``FEDGRPO_MODELS_DIR`` at
    ``models_dir`` (``kwargs`` go to :func:`tiny_spec`)."""
    import fedgrpo.experiments.context as context

    monkeypatch.setattr(context, "zoo_spec", tiny_spec(context.zoo_spec, **kwargs))
    monkeypatch.setenv("FEDGRPO_MODELS_DIR", str(models_dir))
