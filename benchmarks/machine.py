"""What machine a benchmark ran on: shared by the benchmark scripts' result headers."""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path


def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``default``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return default


def versions(*distributions: str) -> dict[str, str]:
    """Python's version and each installed distribution's, for a result header."""
    return {"python": platform.python_version(), **{d: version(d) for d in distributions}}
