"""Post-training weight quantisation of an exported scoring graph (workstation side).

- ``int8``: onnxruntime dynamic quantisation (int8 weights, activations quantised on the fly
  per run), per-tensor or per-channel. The usual CPU speed-up for transformer MatMuls. The
  activation scale spans the whole input tensor, so the device runs this variant one row
  at a time (:class:`edge.onnx_lm.OnnxCausalLM` ``row_by_row``): batch-invariant rewards.
- ``int4``: weight-only blockwise quantisation to the ``MatMulNBits`` contrib op (round to
  nearest, symmetric, ``block_size`` weights per scale). Mostly a size win; speed depends on
  the CPU's kernels, which is why the benchmark measures rather than assumes.

Needs the ``onnx`` package (``pip install 'fedgrpo[export]'``); never imported on a device.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The quantisers log every node at INFO; keep export output readable.
_NOISY_LOGGERS = ("onnxruntime.quantization.matmul_nbits_quantizer", "onnxruntime.quantization")


# MLP output projections (Llama ``down_proj``, GPT-2 ``mlp/c_proj``, OPT/Phi ``fc2``...): their
# inputs carry the large activation outliers of small LMs, which per-tensor dynamic int8
# activations clip. Measured on SmolLM2-135M: quantising them too drops next-token top-1
# agreement with fp32 from ~0.78 to ~0.55; keeping these 30 of 210 MatMuls in fp32 costs
# little speed. Pass an empty pattern to quantise everything.
DEFAULT_INT8_KEEP_FP32 = r"down_proj|mlp/c_proj|/fc2/|dense_4h_to_h|/w2/"


@dataclass(frozen=True)
class QuantOptions:
    """Knobs exposed on the command line. ``accuracy_level`` 4 = int8 compute for int4.

    ``int8_keep_fp32`` is a regular expression on ONNX node names left unquantised by int8.
    """

    per_channel: bool = False
    block_size: int = 32
    accuracy_level: int = 4
    int8_keep_fp32: str = DEFAULT_INT8_KEEP_FP32

    def __post_init__(self) -> None:
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block size must be a power of two >= 16, got {self.block_size}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ValueError(f"accuracy level must be 0..4, got {self.accuracy_level}")


def _quiet() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def fold_constants(source: Path, target: Path) -> None:
    """Constant-fold with onnxruntime's *basic* (portable, standard-ops-only) optimiser.

    Tied embeddings reach the LM head as ``Transpose(embedding)``, which quantisers skip
    because the weight is not a constant; folding materialises it so the head (a fifth of a
    small model's compute with a 49k vocabulary) is quantised too.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def gemm_to_matmul(model: Any) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant W (GPT-2's Conv1D) as ``MatMul`` + ``Add``.

    MatMulNBits only replaces MatMul nodes. Only the plain form (alpha = beta = 1, no
    transposed A) is rewritten; a transposed W is transposed once, offline. Returns how many.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    rewritten = 0
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            node.op_type == "Gemm"
            and len(node.input) >= 2
            and node.input[1] in inits
            and attrs.get("transA", 0) == 0
            and float(attrs.get("alpha", 1.0)) == 1.0
            and float(attrs.get("beta", 1.0)) == 1.0
        )
        if not plain:
            nodes.append(node)
            continue
        weight_name = node.input[1]
        if attrs.get("transB", 0):
            weight = numpy_helper.to_array(inits[weight_name]).T.copy()
            weight_name = f"{weight_name}_t_for_matmul"
            graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        has_bias = len(node.input) > 2 and node.input[2] != ""
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(
            helper.make_node(
                "MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_MatMul"
            )
        )
        if has_bias:
            nodes.append(
                helper.make_node(
                    "Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add"
                )
            )
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def quantize_int8(source: Path, target: Path, options: QuantOptions) -> dict[str, Any]:
    """Dynamic int8 quantisation of every MatMul/Gemm weight and the embedding table."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _quiet()
    op_types = ["MatMul", "Gemm", "Gather"]
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        fold_constants(source, folded)
        excluded = _matching_nodes(folded, options.int8_keep_fp32)
        quantize_dynamic(
            str(folded),
            str(target),
            per_channel=options.per_channel,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=op_types,
            nodes_to_exclude=excluded,
        )
    return {
        "method": "onnxruntime.quantize_dynamic (after basic constant folding)",
        "weight_type": "int8",
        "activations": "uint8, dynamic",
        "per_channel": options.per_channel,
        "op_types": op_types,
        "kept_fp32_pattern": options.int8_keep_fp32,
        "kept_fp32_nodes": len(excluded),
    }


def _matching_nodes(path: Path, pattern: str) -> list[str]:
    """Names of MatMul/Gemm nodes matching ``pattern`` (none if the pattern is empty)."""
    if not pattern:
        return []
    import onnx

    regex = re.compile(pattern)
    model = onnx.load(str(path))
    return [
        n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and regex.search(n.name)
    ]


def quantize_int4(source: Path, target: Path, options: QuantOptions) -> dict[str, Any]:
    """Weight-only 4-bit blockwise (MatMulNBits, RTN, symmetric); returns what was done."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    _quiet()
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        fold_constants(source, folded)
        model = onnx.load(str(folded))
    gemms = gemm_to_matmul(model)
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=options.block_size,
        is_symmetric=True,
        accuracy_level=options.accuracy_level,
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    replaced = sum(1 for node in quantizer.model.model.graph.node if node.op_type == "MatMulNBits")
    if replaced == 0:
        raise ValueError(
            f"int4 quantisation of {source} replaced no MatMul (are the weights' inner "
            f"dimensions smaller than block size {options.block_size}?)"
        )
    return {
        "method": "onnxruntime MatMulNBitsQuantizer (RTN)",
        "bits": 4,
        "symmetric": True,
        "block_size": options.block_size,
        "accuracy_level": options.accuracy_level,
        "matmuls_quantized": replaced,
        "gemms_rewritten": gemms,
    }
