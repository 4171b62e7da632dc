"""Exports show no third-party noise (edge/export_noise.py), yet other messages still pass."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import pytest
from edge_reference import TinyBuild

from fedgrpo.edge import export as export_module
from fedgrpo.edge.export import export_model
from fedgrpo.edge.export_noise import WARNING_NOISE, quiet_export

pytest_plugins = ["edge_fixtures"]
NOISE_TEXT = (
    "TracerWarning",
    "aten::index",
    "torch_dtype",
    "candidate ONNX initializers",
    "pre-processing before quantization",
    "Quantization parameters for tensor",
)


def _export_all(builds: list[TinyBuild], out: Path) -> list[str]:
    """Warnings shown as a plain `python` process would (all but the deprecation kinds)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning):
            warnings.filterwarnings("ignore", category=category)
        for b in builds:
            export_model(str(b.hf_dir), out / b.hf_dir.name, quantize=("int8",))
    return [f"{w.category.__name__}: {w.message}" for w in seen]


def test_export_of_gpt2_and_llama_prints_no_third_party_noise(
    gpt2_build: TinyBuild,
    llama_build: TinyBuild,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    shown = _export_all([gpt2_build, llama_build], tmp_path / "quiet")
    assert shown == []
    err = capfd.readouterr().err
    assert not [t for t in NOISE_TEXT if t in err], err
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if any(t in m for t in NOISE_TEXT)]
    assert any(m.startswith("quantising to int8") for m in messages)  # our own lines stay

    # negative control: the same export without the filters shows that noise
    monkeypatch.setattr(export_module, "quiet_export", contextlib.nullcontext)
    caplog.clear()
    loud = _export_all([gpt2_build], tmp_path / "loud")
    assert any("TracerWarning" in w for w in loud) and any("aten::index" in w for w in loud)
    assert any("pre-processing before quantization" in r.getMessage() for r in caplog.records)


def test_filters_are_targeted_by_category_module_and_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A different message from the same module, or the same text elsewhere, still shows."""
    caplog.set_level(logging.INFO)
    tracer = WARNING_NOISE[0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_export():
            from torch.jit import TracerWarning

            def warn(message: str, module: str) -> None:
                warnings.warn_explicit(message, TracerWarning, "x.py", 1, module=module)

            warn(
                "Converting a tensor to a Python boolean might cause the trace to be incorrect",
                "transformers.masking_utils",
            )  # noise: dropped
            warn(
                "Converting a tensor to a Python boolean might cause the trace to be incorrect",
                "mypackage.model",
            )  # same text, the user's own code: kept
            warn("Output nr 1. of the traced function does not match", "transformers.masking_utils")
            text = "Please consider to run pre-processing before quantization. Refer to ..."
            ort = logging.LogRecord(
                "root", logging.WARNING, "/x/onnxruntime/quantization/q.py", 1, text, None, None
            )
            logging.getLogger().handle(ort)  # noise: dropped
            logging.getLogger().warning("Please consider to run pre-processing elsewhere")
    assert tracer.module.startswith(r"transformers\.")
    assert [str(w.message)[:30] for w in seen] == [
        "Converting a tensor to a Pytho",
        "Output nr 1. of the traced fun",
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "Please consider to run pre-processing elsewhere"
    ]
