"""docs/quickstart.ipynb, executed fresh with nbclient in a real Jupyter kernel.

The kernel is this interpreter (jupyter_client runs ``python`` kernelspecs with
``sys.executable``) with this checkout first on ``PYTHONPATH``; a cell inserted after the
notebook's ``parameters`` cell checks both, shrinks the run (3 rounds, 2 domains, tiny
questions) and swaps in the tiny zoo the runner tests use (1 layer, 3 training steps), built
in the kernel's own process. Everything else — run_scenario, load_run, the plots, the timing-only
sweep — runs as a reader would run it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "docs" / "quickstart.ipynb"
TINY = {
    "rounds": 3, "tasks.domains": ["add", "sub"], "clients.groups[0].count": 2,
    "selection.aux_size": 6, "selection.L": 3, "server.grpo.questions_per_round": 2,
    "server.grpo.group_size": 3, "server.grpo.max_new_tokens": 8,
    "tasks.train_per_domain": 40, "tasks.test_per_domain": 4, "tasks.aux_pool_per_domain": 4,
    "eval.per_domain": 2, "eval.every": 1, "checkpoint.every": 0, "outputs.progress": False,
}  # fmt: skip

SETUP = """\
# inserted by tests/test_notebook.py
import os, sys
from dataclasses import replace
from pathlib import Path
import fedgrpo.experiments.api
assert sys.executable == {python!r}, sys.executable
assert Path(fedgrpo.experiments.api.__file__).resolve().is_relative_to({root!r})
OVERRIDES, OUT, MODELS_DIR = {overrides!r}, {out!r}, {models!r}
import fedgrpo.experiments.context as _context
from fedgrpo.server.zoo.architectures import TinyArch
from fedgrpo.server.zoo.commands import build_default_zoo
from fedgrpo.server.zoo.train import TrainConfig
_tiny, _quick, _real = TinyArch(layers=1, hidden=32, heads=2, max_positions=128), TrainConfig(steps=3, batch_size=8), _context.zoo_spec
_context.zoo_spec = lambda s: replace(_real(s), expert_arch=_tiny, expert_train=_quick, base_arch=_tiny, base_train=_quick, weak_steps=3)
build_default_zoo(Path(MODELS_DIR), _context.zoo_spec(fedgrpo.experiments.api.load(SCENARIO, OVERRIDES)), workers=1)
"""


def test_quickstart_notebook_runs_loads_and_plots(tmp_path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    stored = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in stored)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    code = SETUP.format(
        python=sys.executable, root=str(ROOT), overrides=TINY,
        out=str(tmp_path / "runs"), models=str(tmp_path / "models"),
    )  # fmt: skip
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(code))
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path}
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, on error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "accuracy and participation figures are displayed"
    runs = sorted((tmp_path / "runs" / "quickstart").iterdir())
    assert len(runs) == 1
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["rounds_completed"] == 3
    assert (runs[0] / "plots" / "accuracy_vs_round.png").is_file()
    sweeps = list((tmp_path / "runs" / "dropout-sweep-sweep").glob("*/variants.csv"))
    assert len(sweeps) == 1 and len(sweeps[0].read_text().splitlines()) == 1 + 4
    texts = "".join(
        "".join(o.get("data", {}).get("text/plain", "")) for o in outputs if "data" in o
    )
    assert "RunResult(" in texts and "not answered" in texts
