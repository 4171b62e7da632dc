"""One exceptions module: every message names the bad value and how to fix it."""

from __future__ import annotations


class FedGRPOError(Exception):
    """Base class for every error fedgrpo raises on purpose."""


class ConfigError(FedGRPOError, ValueError):
    """A setting, recipe or scenario value is invalid."""


class PartitionError(ConfigError):
    """Training data cannot be split over clients as asked."""


class DatasetError(ConfigError):
    """A task's data lacks what the task needs (file, column, answer, split); the message
    names the file and the field. ``field`` is the scenario key to fix (under
    ``tasks.source``), when one is to blame."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelCacheError(FedGRPOError):
    """A cached model is missing or corrupted and cannot be rebuilt."""


class ModelSourceError(FedGRPOError):
    """A model id, path or built-in source cannot be loaded."""


class RunDirError(FedGRPOError, FileNotFoundError):
    """A run directory is missing or holds no run records."""


class MissingExtraError(FedGRPOError, ImportError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"{module!r} is not installed; this feature needs the '{extra}' extra: "
            f"pip install 'fedgrpo[{extra}]'"
        )
        self.extra = extra
        self.module = module


def require(module: str, extra: str) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``extra``."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via the message test
        raise MissingExtraError(extra, module) from exc
