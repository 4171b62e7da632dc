"""The device side must run without torch, transformers, optimum or simpy installed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_MODULES = [
    "fedgrpo.edge",
    "fedgrpo.edge.protocol",
    "fedgrpo.edge.answer_format",
    "fedgrpo.edge.scorer",
    "fedgrpo.edge.service",
    "fedgrpo.edge.service_state",
    "fedgrpo.edge.service_requests",
    "fedgrpo.edge.cli",
    "fedgrpo.edge.cli_parser",
    "fedgrpo.edge.device_rewards",
    "fedgrpo.edge.privacy",
    "dp_accounting.rdp.rdp_privacy_accountant",  # the LDP accountant (edge extra)
]
FORBIDDEN = ["torch", "transformers", "simpy", "optimum", "onnx"]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_device_modules_import_no_heavy_packages() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {DEVICE_MODULES!r}: importlib.import_module(m)\n"
        "import fedgrpo.edge.cli\n"
        "fedgrpo.edge.cli.build_parser().format_help()\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_export_without_optimum_names_the_extra() -> None:
    # Simulate a device: optimum is not importable. The export path must say what to install.
    code = (
        "import sys\n"
        "sys.modules['optimum'] = None\n"
        "sys.modules['optimum.exporters'] = None\n"
        "sys.modules['optimum.exporters.onnx'] = None\n"
        "from fedgrpo.edge.cli import main\n"
        "sys.exit(main(['export', '--model', 'x', '--out', 'y']))\n"
    )
    proc = _run(code)
    assert proc.returncode == 2
    assert "pip install 'fedgrpo[export]'" in proc.stderr
