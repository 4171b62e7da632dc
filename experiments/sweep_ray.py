"""``fedgrpo sweep --backend ray``: the sweep's variants as Ray tasks (optional extra ``ray``).

Each variant (grid point x seed) is one task running the same worker entry point as the local
backend (:func:`fedgrpo.experiments.sweep._run_variant`), so a variant computes the same result
whichever backend ran it. Without ``address`` a local Ray is started on this machine (and shut
down afterwards); with ``address`` (``ray://host:10001`` or ``host:6379``, or ``auto``) the
tasks run on that cluster. On a cluster the sweep directory (``--out-root``) must be a path
every node can write (a shared filesystem), and fedgrpo must be installed on every node.
An already initialised Ray (e.g. in a notebook or a test) is used as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgrpo.errors import ConfigError

if TYPE_CHECKING:
    from fedgrpo.experiments.sweep import Outcome, Runner, Variant

__all__ = ["BACKENDS", "check_backend", "import_ray", "run_on_ray"]

BACKENDS = ("local", "ray")


def check_backend(backend: str) -> None:
    """A known backend, and Ray importable when it is ``ray``."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if backend == "ray":
        import_ray()


def import_ray() -> Any:
    """The ``ray`` module, or a clear error naming the extra that provides it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--backend ray needs Ray, which is not installed; install the extra: "
            "pip install 'fedgrpo[ray]' (or use --backend local)"
        ) from exc
    return ray


def run_on_ray(
    variants: Sequence[Variant],
    run_dirs: Mapping[str, Path],
    runner: Runner | None,
    address: str | None,
    record: Callable[[Variant, Outcome], None],
) -> None:
    """Run every variant as a Ray task (1 CPU each) and hand each outcome to ``record`` as
    it finishes; a task that dies (worker crash, lost node) is recorded as failed."""
    from fedgrpo.experiments.sweep import _run_variant

    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_run_variant)
        refs = {task.remote(runner, v.scenario, run_dirs[v.name]): v for v in variants}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the task itself died (it never raises otherwise)
                    outcome = ("failed", {}, f"{type(exc).__name__}: {exc}")
                record(refs[ref], outcome)
    finally:
        if started:
            ray.shutdown()
