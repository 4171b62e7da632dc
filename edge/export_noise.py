"""Third-party messages during an export, filtered to what a user can act on.

An export (``fedgrpo-edge export``, and emulate's exports of client models) runs torch's ONNX
tracer, transformers, optimum and onnxruntime's quantiser; on a tiny zoo model they printed
3.5 KB of warnings and log lines, none of which asks anything of the user. :func:`quiet_export`
silences exactly those, each by its category (or logger), module and message, with the reason
below; anything else (a new warning, an error, our own log lines) still shows.

Seen on every export of the tiny GPT-2/Llama zoo models (torch 2.x, transformers 4.57,
optimum-onnx, onnxruntime 1.2x) and why each is noise:

* ``TracerWarning`` from ``transformers.masking_utils`` and (Llama)
  ``transformers.integrations.sdpa_attention`` ("Converting a tensor to a Python boolean..."):
  the causal mask's shape checks are traced as constants (the export always passes an
  attention mask); the graph has dynamic axes and the edge tests compare its rewards with
  PyTorch's (atol 1e-4).
* ``UserWarning`` from ``torch.onnx`` ("Exporting aten::index operator of advanced
  indexing..."): raised for every HF decoder's mask indexing, whose indices are non-negative;
  ``--validate`` checks a given model's graph against PyTorch.
* transformers' "`torch_dtype` is deprecated! Use `dtype` instead!": optimum's call, not ours.
* optimum's "Found different candidate ONNX initializers (likely duplicate) for the tied
  weights" (and its per-weight lines): tied embedding / lm_head; optimum de-duplicates them.
* onnxruntime's quantiser on the root logger: "Please consider to run pre-processing before
  quantization", "Quantization parameters for tensor ... not specified", "Ignore MatMul due
  to non constant B": dynamic int8 of a transformer needs none of these.

Only the standard library is imported here (``import edge`` must not import torch); the
tracer's warning class is looked up when an export starts.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

__all__ = ["LOG_NOISE", "WARNING_NOISE", "LogNoise", "WarningNoise", "quiet", "quiet_export"]


@dataclass(frozen=True)
class LogNoise:
    """Records of ``logger`` whose message matches ``message`` (and, for the root logger,
    that come from a file under ``path``)."""

    logger: str
    message: str
    path: str = ""

    def matches(self, record: logging.LogRecord) -> bool:
        if self.path and self.path not in record.pathname.replace("\\", "/"):
            return False
        return re.match(self.message, record.getMessage()) is not None


@dataclass(frozen=True)
class WarningNoise:
    """``warnings`` filter fields: category (by dotted name), module regex, message regex."""

    category: str
    module: str
    message: str


LOG_NOISE: tuple[LogNoise, ...] = (
    LogNoise("transformers.configuration_utils", r"`torch_dtype` is deprecated! Use `dtype`"),
    LogNoise("optimum", r"Found different candidate ONNX initializers \(likely duplicate\)"),
    LogNoise("optimum", r"\t[\w.]+: \{.*\}( --> ignored)?"),  # the lines that follow it
    LogNoise("root", r"Please consider to run pre-processing before quantization", "onnxruntime/"),
    LogNoise("root", r"Quantization parameters for tensor:.* not specified", "onnxruntime/"),
    LogNoise("root", r"Ignore MatMul due to non constant B", "onnxruntime/"),
)

WARNING_NOISE: tuple[WarningNoise, ...] = (
    WarningNoise(
        "torch.jit.TracerWarning",
        r"transformers\.(masking_utils|integrations\.sdpa_attention)",
        r"Converting a tensor to a Python boolean might cause the trace to be incorrect",
    ),
    WarningNoise(
        "builtins.UserWarning",
        r"torch\.onnx\.",
        r"Exporting aten::index operator of advanced indexing",
    ),
)


class _DropNoise(logging.Filter):
    def __init__(self, noise: tuple[LogNoise, ...]) -> None:
        super().__init__()
        self.noise = noise

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n.matches(record) for n in self.noise)


def _category(dotted: str) -> type[Warning] | None:
    import importlib

    module, _, name = dotted.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None  # that library is not installed: nothing of it to silence
    return found if isinstance(found, type) and issubclass(found, Warning) else None


def quiet_export() -> AbstractContextManager[None]:
    """Inside: the known export noise of :data:`LOG_NOISE` / :data:`WARNING_NOISE` is dropped."""
    return quiet(LOG_NOISE, WARNING_NOISE)


@contextmanager
def quiet(
    log_noise: tuple[LogNoise, ...], warning_noise: tuple[WarningNoise, ...] = ()
) -> Iterator[None]:
    """Inside: records matching ``log_noise`` and warnings matching ``warning_noise`` are
    dropped; everything else passes."""
    filters: list[tuple[logging.Logger, _DropNoise]] = []
    for name in dict.fromkeys(n.logger for n in log_noise):
        logger = logging.getLogger() if name == "root" else logging.getLogger(name)
        flt = _DropNoise(tuple(n for n in log_noise if n.logger == name))
        logger.addFilter(flt)
        filters.append((logger, flt))
    try:
        with warnings.catch_warnings():
            for w in warning_noise:
                category = _category(w.category)
                if category is not None:
                    warnings.filterwarnings(
                        "ignore", message=w.message, category=category, module=w.module
                    )
            yield
    finally:
        for logger, flt in filters:
            logger.removeFilter(flt)
