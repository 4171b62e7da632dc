"""What a trainer checkpoint holds and how it is restored: model, optimizer, round and policy
version, competence matrix, held late groups, the trust aggregator's state and the Python and
torch random states -- everything a resumed run needs to continue exactly."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedgrpo.errors import ConfigError
from fedgrpo.selection.competence import CompetenceMatrix

__all__ = ["load_trainer", "restore_trainer", "save_trainer", "trainer_payload"]


def trainer_payload(trainer: Any, extra: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {
        "round": trainer.state.round,
        "seed": trainer.seed,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "config": asdict(trainer.config),
        "competence": trainer.competence.to_json() if trainer.competence is not None else None,
        "version": trainer.state.version,
        "late_groups": trainer.late_groups,
        "aggregator": trainer.aggregator.state() if trainer.aggregator is not None else None,
        "python_random": random.getstate(),
        "torch_rng": torch.get_rng_state(),
        "extra": extra,
    }


def restore_trainer(trainer: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """Load ``payload`` into ``trainer``; returns a copy of its ``extra``."""
    import torch

    if payload["seed"] != trainer.seed:
        raise ConfigError(
            f"checkpoint was written with seed {payload['seed']} but this run uses "
            f"{trainer.seed}; resume with the same scenario"
        )
    trainer.model.load_state_dict(payload["model"])
    trainer.optimizer.load_state_dict(payload["optimizer"])
    trainer.state.round = int(payload["round"])
    trainer.state.version = int(payload.get("version", trainer.state.round))
    if trainer.late_groups is not None and payload.get("late_groups") is not None:
        trainer.late_groups = payload["late_groups"]
    if trainer.aggregator is not None and payload.get("aggregator") is not None:
        trainer.aggregator.restore(payload["aggregator"])
    if payload.get("competence"):
        loaded = CompetenceMatrix.from_json(payload["competence"])
        if trainer.competence is None:
            trainer.competence = loaded
        else:
            trainer.competence.restore(loaded)  # the selector holds this object
    random.setstate(payload["python_random"])
    torch.set_rng_state(payload["torch_rng"])
    return dict(payload.get("extra", {}))


def save_trainer(trainer: Any, directory: Path, extra: dict[str, Any]) -> Path:
    """Write ``directory/round-XXXXX.pt`` atomically with its checksum (server.checkpoint)."""
    import io

    import torch

    from fedgrpo.server.checkpoint import write_checkpoint

    buf = io.BytesIO()
    torch.save(trainer_payload(trainer, extra), buf)
    return write_checkpoint(directory, trainer.state.round, buf.getvalue())


def load_trainer(trainer: Any, directory: Path) -> dict[str, Any]:
    """Restore ``trainer`` from the newest good checkpoint in ``directory`` (a damaged newest
    file falls back to an older good one); returns its ``extra`` with the file's name."""
    import io

    import torch

    from fedgrpo.server.checkpoint import read_checkpoint

    loaded = read_checkpoint(
        directory, lambda data: torch.load(io.BytesIO(data), weights_only=False)
    )
    extra = restore_trainer(trainer, loaded.payload)
    extra["checkpoint"] = loaded.path.name
    extra["checkpoint_skipped"] = loaded.skipped
    return extra
