"""Ctrl-C during ``models build``: training processes stop, no ``.tmp-*`` entry is left, no
leaked-semaphore warning is printed, and models finished before the interrupt stay cached."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys, time
from fedgrpo.server.zoo.build import build_zoo
from fedgrpo.server.zoo.recipes import ZooSpec

def train(recipe, out_dir):
    (out_dir / "weights.bin").write_bytes(b"x")
    if recipe.name != "server-base":
        time.sleep(300)
    return {}

if __name__ == "__main__":
    try:
        build_zoo(ZooSpec(), sys.argv[1], workers=2, train=train)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
"""


def _partial(models: Path) -> list[Path]:
    return [p for p in models.glob(".tmp-*") if (p / "weights.bin").exists()]


def test_interrupt_during_parallel_build_cleans_up(tmp_path: Path) -> None:
    script, models = tmp_path / "build.py", tmp_path / "models"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(models)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        # server-base finishes at once; then two slow experts train side by side
        while time.monotonic() < deadline:
            done = [p for p in models.glob("server-base-*") if not p.name.startswith(".")]
            if done and len(_partial(models)) == 2:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("the build never reached two training processes")
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in out, (out, err)
    assert "leaked semaphore" not in err and "Traceback" not in err, err
    assert not list(models.glob(".tmp-*"))
    (kept,) = models.glob("server-base-*")
    assert (kept / "fedgrpo_manifest.json").exists()
