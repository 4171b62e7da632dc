"""Run a shrunk scenario on the tiny test zoo in a subprocess, optionally killing itself.

    python tests/resume_driver.py RUN_DIR [--resume] [--kill POINT:N] [--set K=V ...]

POINT is where the process sends itself SIGKILL -- a real kill -9, no cleanup, no finally:
``step:N`` as round N starts (``term:N`` sends SIGTERM there instead), ``update:N`` in round N between gathering and the GRPO update,
``eval:N`` during the N-th evaluation, ``write:N`` on the N-th atomic file write of a
checkpoint, after half the bytes are in its temp file. Used by tests/test_resume.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHRINK = [
    "rounds=6", "selection.aux_size=6", "selection.L=3",
    "server.grpo.questions_per_round=2", "server.grpo.group_size=4",
    "server.grpo.max_new_tokens=28",
    "tasks.train_per_domain=40", "tasks.test_per_domain=4", "tasks.aux_pool_per_domain=4",
    "eval.per_domain=2", "eval.every=3", "checkpoint.every=2", "checkpoint.keep=2",
    "outputs.progress=false", "outputs.plots=false",
]  # fmt: skip


def tiny_spec(real: Any) -> Any:
    """``fedgrpo.experiments.context.zoo_spec`` shrunk to the tiny test zoo."""
    from tiny_zoo import tiny_spec as shrink

    from fedgrpo.server.zoo.train import TrainConfig

    # a base that writes the answer format often enough for rewards to vary (~2 s to train)
    base = TrainConfig(steps=250, batch_size=16, warmup_steps=10)
    return shrink(real, weak_steps=2, base_train=base)


def tiny_zoo() -> None:
    import fedgrpo.experiments.context as context

    context.zoo_spec = tiny_spec(context.zoo_spec)  # type: ignore[assignment]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, n: int) -> None:
    import fedgrpo.server.checkpoint as ckpt
    from fedgrpo.server.trainer import FedGRPOTrainer

    if point in ("step", "term"):
        step = FedGRPOTrainer.step

        def killing_step(self: FedGRPOTrainer) -> dict:
            if self.state.round == n:
                if point == "term":  # what `timeout`, SLURM and `docker stop` send
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    die()
            return step(self)

        FedGRPOTrainer.step = killing_step  # type: ignore[method-assign]
    elif point == "update":
        update = FedGRPOTrainer._update

        def killing_update(
            self: FedGRPOTrainer, batch: object, combined: object, *args: object
        ) -> dict:
            if self.state.round == n:
                die()
            return update(self, batch, combined, *args)

        FedGRPOTrainer._update = killing_update  # type: ignore[method-assign,assignment]
    elif point in ("eval", "write"):
        target, name = (FedGRPOTrainer, "evaluate") if point == "eval" else (ckpt, "_atomic_write")
        original = getattr(target, name)
        calls = [0]

        def killing(*args: object, **kwargs: object) -> object:
            calls[0] += 1
            if calls[0] == n:
                if point == "write":
                    path, data = args  # type: ignore[misc]
                    tmp = Path(str(path) + ".tmp")
                    tmp.write_bytes(bytes(data)[: len(data) // 2])  # type: ignore[arg-type]
                die()
            return original(*args, **kwargs)

        setattr(target, name, killing)
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    tiny_zoo()
    if args.kill:
        point, n = args.kill.split(":")
        arm(point, int(n))
    from fedgrpo.experiments.runner import run_scenario
    from fedgrpo.scenarios.loader import load_scenario

    s = load_scenario(ROOT / "scenarios" / "quickstart.yaml", [*SHRINK, *args.set])
    try:
        summary = run_scenario(s, args.run_dir, resume=args.resume)
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    print(summary["status"], summary["rounds_completed"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
