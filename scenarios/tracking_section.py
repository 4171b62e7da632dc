"""``outputs.loggers``: which experiment trackers a run writes to (besides metrics.jsonl).

``tensorboard`` (event files under ``RUN_DIR/tensorboard``) and ``mlflow`` (a local file
store under ``RUN_DIR/mlruns``) come with the ``server`` extra; ``wandb`` (offline, under
``RUN_DIR/wandb``) needs the ``wandb`` package, checked here so ``fedgrpo validate`` already
says so. The backends live in :mod:`fedgrpo.experiments.tracking_backends`.
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Literal

from pydantic import AfterValidator

from fedgrpo.scenarios.fields import err

LoggerName = Literal["tensorboard", "mlflow", "wandb"]
# the module each logger imports, and how to get it
LOGGER_PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "pip install 'fedgrpo[server]'"),
    "mlflow": ("mlflow", "pip install 'fedgrpo[server]' (mlflow-skinny is enough)"),
    "wandb": ("wandb", "pip install wandb (fedgrpo logs offline; `wandb sync` uploads later)"),
}


def _check_loggers(value: list[str]) -> list[str]:
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise err("loggers", "loggers repeat {dupes}; list each once", dupes=dupes)
    for name in value:
        module, fix = LOGGER_PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise err(
                "loggers",
                "logger '{name}' needs the '{module}' package, which is not installed: {fix}; "
                "or remove '{name}' from outputs.loggers",
                name=name,
                module=module,
                fix=fix,
            )
    return value


Loggers = Annotated[list[LoggerName], AfterValidator(_check_loggers)]
