"""The argument parser of ``fedgrpo-edge``: one builder per subcommand (``export``, ``serve``,
``score``, ``info``) and the argument types they share. Imports nothing heavy: the device runs
``--help`` without torch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeAlias

from fedgrpo.edge.manifest import VARIANTS
from fedgrpo.edge.protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_STRING_CHARS, REWARD_MODES

__all__ = ["TOKEN_ENV", "build_parser"]

TOKEN_ENV = "FEDGRPO_EDGE_TOKEN"
# what ``ArgumentParser.add_subparsers`` returns (argparse names its class privately)
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0 = any free port), got {value}")
    return value


def _add_scorer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, type=Path, help="export directory (from 'export')"
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default=None,
        help="graph to run: fp32, int8 or int4 (default: int8 if exported, else fp32)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="onnxruntime intra-op threads (default: all cores)",
    )
    parser.add_argument(
        "--me-mode",
        choices=("agreement", "likelihood"),
        default="agreement",
        help="model-based reward used by 'auto' when the answer table lacks the question",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=40,
        help="greedy decoding length for agreement/competence answers (default 40)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``fedgrpo-edge`` parser: global options, then one subparser per command."""

    parser = argparse.ArgumentParser(
        prog="fedgrpo-edge",
        description=(
            "Edge runtime of fedgrpo: score candidate answers with a small ONNX model and "
            "return only scalar rewards over the Open Inference Protocol v2."
        ),
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING... (default INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_export_parser(sub)
    _add_serve_parser(sub)
    _add_score_parser(sub)
    _add_info_parser(sub)
    return parser


def _add_export_parser(sub: Subparsers) -> None:
    """``export``: HF causal LM → ONNX export directory (workstation)."""
    exp = sub.add_parser(
        "export",
        help="HF causal LM -> ONNX export directory (workstation; needs fedgrpo[export])",
        description=(
            "Export a Hugging Face causal LM (local directory, hub id or builtin:NAME) to an "
            "edge directory: model.onnx (fp32 reference), quantised variants, tokenizer.json, "
            "optional answers.jsonl and manifest.json. Copy the directory to the device."
        ),
    )
    exp.add_argument(
        "--model", required=True, help="HF directory, hub id or builtin:smollm2-135m-instruct"
    )
    exp.add_argument("--out", required=True, type=Path, help="output directory")
    _add_quantize_options(exp)
    _add_export_options(exp)


def _add_quantize_options(exp: argparse.ArgumentParser) -> None:
    """``export``: which quantised variants to write, and how."""
    exp.add_argument(
        "--quantize",
        nargs="+",
        choices=VARIANTS,
        default=["int8"],
        help="extra variants to write (fp32 is always kept as reference; default int8)",
    )
    exp.add_argument("--per-channel", action="store_true", help="int8: per-channel weight scales")
    exp.add_argument(
        "--block-size", type=int, default=32, help="int4: weights per scale (default 32)"
    )
    exp.add_argument(
        "--accuracy-level",
        type=int,
        default=4,
        choices=(0, 1, 2, 3, 4),
        help="int4 MatMulNBits compute precision (4 = int8 activations, fastest on CPU; 0 = fp32)",
    )
    exp.add_argument(
        "--int8-keep-fp32",
        default=None,
        metavar="REGEX",
        help="int8: ONNX node names left in fp32 (default: MLP output projections, whose "
        "activation outliers per-tensor int8 clips; '' quantises everything)",
    )


def _add_export_options(exp: argparse.ArgumentParser) -> None:
    """``export``: the answer table, graph and context options, validation, overwrite."""
    exp.add_argument(
        "--answers",
        type=Path,
        default=None,
        help="JSONL of {question, answer}: the client's local answer table for AE rewards "
        "(default: the source directory's answers.jsonl, if any)",
    )
    exp.add_argument(
        "--no-source-answers",
        action="store_true",
        help="do not carry over the source directory's answers.jsonl",
    )
    exp.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: optimum's choice)"
    )
    exp.add_argument(
        "--max-length",
        type=_positive_int,
        default=None,
        help="cap the context length the device will use (default: the model's)",
    )
    exp.add_argument(
        "--validate", action="store_true", help="let optimum compare ONNX vs PyTorch outputs"
    )
    exp.add_argument(
        "--overwrite", action="store_true", help="replace a non-export --out directory"
    )


def _add_serve_parser(sub: Subparsers) -> None:
    """``serve``: serve an export directory over HTTP (OIP v2)."""
    serve = sub.add_parser(
        "serve",
        help="serve an export directory over HTTP (OIP v2)",
        description=(
            "Serve rewards over the Open Inference Protocol v2. Health: GET /v2/health/ready. "
            f"Auth: --token or ${TOKEN_ENV} (Authorization: Bearer ...)."
        ),
    )
    _add_scorer_options(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="bind address (default 127.0.0.1; 0.0.0.0 for LAN)"
    )
    serve.add_argument("--port", type=_port, required=True, help="TCP port (0 = pick a free one)")
    serve.add_argument(
        "--name", default=None, help="model name in URLs (default: source model's name)"
    )
    serve.add_argument(
        "--token", default=None, help=f"bearer token (prefer ${TOKEN_ENV}: not in ps output)"
    )
    _add_serve_limits(serve)


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    """``serve``: admission, time and size limits."""
    serve.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=1,
        help="requests scored at once (default 1)",
    )
    serve.add_argument(
        "--max-queue",
        type=_non_negative_int,
        default=4,
        help="requests waiting for a slot before 503 (default 4)",
    )
    serve.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="per-request limit in seconds -> 504 (default 30)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=4 * 1024 * 1024,
        help="-> 413 above this (default 4 MiB)",
    )
    serve.add_argument(
        "--max-batch",
        type=_positive_int,
        default=DEFAULT_MAX_BATCH,
        help=f"items per request (default {DEFAULT_MAX_BATCH})",
    )
    serve.add_argument(
        "--max-string-chars",
        type=_positive_int,
        default=DEFAULT_MAX_STRING_CHARS,
        help=f"characters per string (default {DEFAULT_MAX_STRING_CHARS})",
    )


def _add_score_parser(sub: Subparsers) -> None:
    """``score``: score a JSONL file offline."""
    score = sub.add_parser(
        "score",
        help="score a JSONL file of {question, completion} offline",
        description="Read JSONL lines with 'question' and 'completion'; print each line with a 'reward' added.",
    )
    _add_scorer_options(score)
    score.add_argument("input", type=Path, help="JSONL file ('-' for stdin)")
    score.add_argument(
        "--mode", choices=REWARD_MODES, default="auto", help="reward mode (default auto)"
    )
    score.add_argument(
        "--format-weight", type=float, default=0.0, help="weight of the format reward in [0, 1]"
    )
    score.add_argument(
        "--batch-size", type=_positive_int, default=32, help="items per scoring call (default 32)"
    )


def _add_info_parser(sub: Subparsers) -> None:
    """``info``: print (and verify) an export directory's manifest."""
    info = sub.add_parser(
        "info",
        help="print an export directory's manifest",
        description="Print manifest.json; --verify checks every file's sha256.",
    )
    info.add_argument("model", type=Path, help="export directory")
    info.add_argument("--verify", action="store_true", help="check every listed file's checksum")
