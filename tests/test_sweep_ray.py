"""``fedgrpo sweep --backend ray`` against a real local Ray (2 CPUs, started once for the
module): the same variants give the same results as the local backend; a missing Ray is a
clear error naming the extra."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedgrpo.errors import ConfigError
from fedgrpo.experiments.sweep import run_sweep

BASE = """\
name: tinyray
seed: 10
rounds: 3
clients: {groups: [{name: pi, count: 6, profile: rpi4}, {name: ph, count: 6, profile: phone-4g}]}
selection: {selector: random}
sim: {reward_source: timing}
"""
GRID = ["round_policy.deadline_s=2,30"]
VOLATILE = ("wall_s", "run_dir")


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _rows(sweep_dir: Path) -> list[dict[str, Any]]:
    with (sweep_dir / "variants.csv").open(encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(f)]


def _metrics(sweep_dir: Path) -> dict[str, list[str]]:
    out = {}
    for run in sorted((sweep_dir / "runs").iterdir()):
        lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        out[run.name] = [ln for ln in lines if '"wall' not in ln]
    return out


def test_ray_backend_matches_local(ray_local: Any, tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(BASE, encoding="utf-8")
    kw: dict[str, Any] = dict(seeds=2, metric="virtual_s", progress=False)
    local = run_sweep(base, GRID, workers=0, out_root=tmp_path / "local", **kw)
    remote = run_sweep(base, GRID, out_root=tmp_path / "ray", backend="ray", **kw)
    assert not local.failed and not remote.failed
    assert len(remote.results) == 4
    assert _rows(remote.sweep_dir) == _rows(local.sweep_dir)
    assert _metrics(remote.sweep_dir) == _metrics(local.sweep_dir)
    # the grid matters: a 2 s deadline gives shorter rounds than 30 s
    virt = {
        r.variant.point["round_policy.deadline_s"]: r.summary["virtual_s"] for r in remote.results
    }
    assert virt[2] < virt[30]
    assert ray_local.is_initialized()  # an initialised Ray is used as it is, not shut down


def test_ray_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(BASE, encoding="utf-8")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"fedgrpo\[ray\]"):
        run_sweep(base, GRID, out_root=tmp_path / "out", backend="ray", progress=False)
    assert not (tmp_path / "out").exists()  # failed before making output directories
