"""fedgrpo edge runtime: what runs on a phone, Raspberry Pi or laptop.

Scores candidate policies with a small domain model (ONNX) and returns only scalars.
Depends on onnxruntime, tokenizers, numpy and aiohttp only — never torch, transformers or
simpy (``tests/test_edge_purity.py`` enforces it). Import submodules explicitly; this
package ``__init__`` imports nothing heavy.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
