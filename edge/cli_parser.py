"""The argument parser of ``fedgrpo-edge``: one builder per subcommand (``export``, ``serve``,
``score``, ``info``) and the argument types they share. Imports nothing heavy: the device runs
``--help`` without torch.

It also holds what both command lines share (``fedgrpo`` imports these, the edge imports
nothing of ours): the help formatter that shows every default, ``--version``, the logging
flags (``-v/--verbose``, ``-q/--quiet``, ``--log-level``) and deprecated option aliases.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeAlias

from fedgrpo.edge.device_rewards import add_arguments as add_device_rewards_arguments
from fedgrpo.edge.manifest import VARIANTS
from fedgrpo.edge.protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_STRING_CHARS, REWARD_MODES

__all__ = [
    "LOG_LEVELS",
    "TOKEN_ENV",
    "DefaultsHelpFormatter",
    "DeprecatedAlias",
    "add_common_flags",
    "build_parser",
    "configure_logging",
    "non_negative_int",
    "package_version",
    "positive_int",
]

TOKEN_ENV = "FEDGRPO_EDGE_TOKEN"
DEFAULT_PORT = 8000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# what ``ArgumentParser.add_subparsers`` returns (argparse names its class privately)
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option with a real default whose help does not
    already name it (None, False and suppressed defaults are left out)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or isinstance(default, bool)
            or default is argparse.SUPPRESS
            or action.nargs == 0
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class DeprecatedAlias(argparse.Action):
    """An old option spelling that stores into the new option's ``dest`` and warns once."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = "", **kw: Any) -> None:
        self.new = new
        kw.setdefault("default", argparse.SUPPRESS)
        kw.setdefault("help", f"deprecated alias of {new}")
        super().__init__(option_strings, dest, **kw)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def package_version() -> str:
    """The installed fedgrpo version (``0+unknown`` in a checkout that was never installed)."""
    try:
        return version("fedgrpo")
    except PackageNotFoundError:
        return "0+unknown"


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}; use one of {', '.join(LOG_LEVELS)}"
        )
    return level


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--version`` and the logging flags, identical on ``fedgrpo`` and ``fedgrpo-edge``."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (= --log-level DEBUG)"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="warnings and errors only (= --log-level WARNING)",
    )
    group.add_argument(
        "--log-level", type=_log_level, default="INFO", metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)}",
    )  # fmt: skip


def configure_logging(args: argparse.Namespace) -> None:
    """Root logging from the flags of :func:`add_common_flags`."""
    level = "DEBUG" if args.verbose else "WARNING" if args.quiet else args.log_level
    logging.basicConfig(
        level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
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
    _add_variant_options(parser)


def _add_variant_options(parser: argparse.ArgumentParser) -> None:
    """Which graph to run and how: variant, threads, model-based reward, decoding length."""
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default=None,
        help="graph to run: fp32, int8 or int4 (default: int8 if exported, else fp32)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
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
        type=positive_int,
        default=40,
        help="greedy decoding length for agreement/competence answers",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``fedgrpo-edge`` parser: global options, then one subparser per command."""

    parser = argparse.ArgumentParser(
        prog="fedgrpo-edge",
        description=(
            "Edge runtime of fedgrpo: score candidate answers with a small ONNX model and "
            "return only scalar rewards over the Open Inference Protocol v2."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    add_common_flags(parser)
    # no command: main prints this help
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_export_parser(sub)
    _add_serve_parser(sub)
    _add_score_parser(sub)
    _add_info_parser(sub)
    return parser


def _add_export_parser(sub: Subparsers) -> None:
    """``export``: HF causal LM → ONNX export directory (workstation)."""
    exp = sub.add_parser(
        "export",
        formatter_class=DefaultsHelpFormatter,
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
        help="extra variants to write (fp32 is always kept as reference)",
    )
    exp.add_argument("--per-channel", action="store_true", help="int8: per-channel weight scales")
    exp.add_argument("--block-size", type=int, default=32, help="int4: weights per scale")
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
        type=positive_int,
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
        formatter_class=DefaultsHelpFormatter,
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
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port (0 = pick a free one)"
    )
    serve.add_argument(
        "--name", default=None, help="model name in URLs (default: source model's name)"
    )
    serve.add_argument(
        "--token", default=None, help=f"bearer token (prefer ${TOKEN_ENV}: not in ps output)"
    )
    _add_serve_limits(serve)
    _add_serve_timeouts(serve)
    add_device_rewards_arguments(serve)


def _seconds(text: str) -> float:
    """A finite number of seconds >= 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds >= 0")
    return value


def _add_serve_timeouts(serve: argparse.ArgumentParser) -> None:
    """``serve``: how long slow or silent connections are held, and the shutdown budget."""
    for flag, default, text in (
        ("--keepalive-timeout", 15.0, "close a connection that sends nothing for this long"),
        ("--header-timeout", 10.0, "close a connection whose headers are not complete in time"),
        ("--body-timeout", 30.0, "answer 408 when a request body has not arrived in time"),
        ("--shutdown-timeout", 30.0, "after SIGTERM, exit within this many seconds"),
        ("--drain-grace", 1.0, "after SIGTERM, answer readiness 503 this long before closing"),
    ):
        serve.add_argument(flag, type=_seconds, default=default, help=text)


def _add_serve_limits(serve: argparse.ArgumentParser) -> None:
    """``serve``: admission, time and size limits."""
    limits: tuple[tuple[str, Any, Any, str], ...] = (
        ("--max-concurrency", positive_int, 1, "requests scored at once"),
        ("--max-queue", non_negative_int, 4, "requests waiting for a slot before 503"),
        ("--timeout", float, 30.0, "per-request limit in seconds -> 504"),
        ("--max-body-bytes", positive_int, 4 * 1024 * 1024, "-> 413 above this (default 4 MiB)"),
        ("--max-batch", positive_int, DEFAULT_MAX_BATCH, "items per request"),
        ("--max-string-chars", positive_int, DEFAULT_MAX_STRING_CHARS, "characters per string"),
    )
    for flag, kind, default, text in limits:
        serve.add_argument(flag, type=kind, default=default, help=text)


def _add_score_parser(sub: Subparsers) -> None:
    """``score``: score a JSONL file offline."""
    score = sub.add_parser(
        "score",
        formatter_class=DefaultsHelpFormatter,
        help="score a JSONL file of {question, completion} offline",
        description="Read JSONL lines with 'question' and 'completion'; print each line with a 'reward' added.",
    )
    _add_scorer_options(score)
    score.add_argument("input", type=Path, help="JSONL file ('-' for stdin)")
    score.add_argument("--mode", choices=REWARD_MODES, default="auto", help="reward mode")
    score.add_argument(
        "--format-weight", type=float, default=0.0, help="weight of the format reward in [0, 1]"
    )
    score.add_argument(
        "--partial-credit",
        type=float,
        default=0.0,
        help="reward of a wrong number: this times its closeness to the right one, in [0, 1]",
    )
    score.add_argument("--batch-size", type=positive_int, default=32, help="items per scoring call")


def _add_info_parser(sub: Subparsers) -> None:
    """``info``: print (and verify) an export directory's manifest."""
    info = sub.add_parser(
        "info",
        formatter_class=DefaultsHelpFormatter,
        help="print an export directory's manifest",
        description="Print manifest.json; --verify checks every file's sha256.",
    )
    info.add_argument(
        "--model", type=Path, default=None, help="export directory (as for serve and score)"
    )
    info.add_argument(
        "model_dir",
        nargs="?",
        type=Path,
        default=None,
        metavar="DIR",
        help="export directory, the older positional form of --model",
    )
    info.add_argument("--verify", action="store_true", help="check every listed file's checksum")
