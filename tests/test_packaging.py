"""The wheel installs one ``fedgrpo`` namespace and nothing under a generic top-level name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["edge", "rounds", "selection", "sim", "server", "scenarios", "experiments"]


def test_every_top_level_folder_is_linked_into_the_namespace() -> None:
    for name in FOLDERS:
        link = ROOT / "fedgrpo" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), name


@pytest.mark.timeout(300)
def test_wheel_holds_only_the_fedgrpo_namespace(tmp_path: Path) -> None:
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = tmp_path / "src"
    junk = shutil.ignore_patterns(
        ".git", ".venv", "models", "runs", "build", "*.egg-info", "__pycache__", ".*_cache"
    )
    shutil.copytree(ROOT, src, symlinks=True, ignore=junk)
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    proc = subprocess.run(
        [*cmd, "-w", str(out), str(src)], capture_output=True, text=True, timeout=280
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("fedgrpo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"fedgrpo", wheel.name.split("-py")[0] + ".dist-info"}, tops
    for name in FOLDERS:
        assert f"fedgrpo/{name}/__init__.py" in names, name
    # package data travels under the namespace too
    assert "fedgrpo/scenarios/quickstart.yaml" in names
    assert "fedgrpo/sim/data/client_device_capacity_sample.json" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "fedgrpo = fedgrpo.experiments.cli:main" in text
    assert "fedgrpo-edge = fedgrpo.edge.cli:main" in text
