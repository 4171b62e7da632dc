"""``fedgrpo-edge``: export a model (workstation), serve / score / inspect it (device).

Only ``export`` needs torch, transformers and optimum, and it imports them lazily, so the
device-side subcommands run with ``pip install 'fedgrpo[edge]'`` alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.edge.manifest import VARIANTS, Manifest, ManifestError, variant_filename
from fedgrpo.edge.protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_STRING_CHARS, REWARD_MODES

TOKEN_ENV = "FEDGRPO_EDGE_TOKEN"
log = logging.getLogger("fedgrpo.edge.cli")


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

    info = sub.add_parser(
        "info",
        help="print an export directory's manifest",
        description="Print manifest.json; --verify checks every file's sha256.",
    )
    info.add_argument("model", type=Path, help="export directory")
    info.add_argument("--verify", action="store_true", help="check every listed file's checksum")
    return parser


def _load_scorer(args: argparse.Namespace) -> Any:
    from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig

    variant = args.variant
    if variant is None:
        manifest = Manifest.read(args.model)
        variant = "int8" if "int8" in manifest.variants else "fp32"
    config = ScorerConfig(
        variant=variant,
        threads=args.threads,
        me_mode=args.me_mode,
        max_new_tokens=args.max_new_tokens,
    )
    return EdgeScorer.load(args.model, config)


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from fedgrpo.edge.export import export_model
        from fedgrpo.edge.quantize import QuantOptions

        manifest = export_model(
            args.model,
            args.out,
            quantize=args.quantize,
            options=QuantOptions(
                per_channel=args.per_channel,
                block_size=args.block_size,
                accuracy_level=args.accuracy_level,
                **({} if args.int8_keep_fp32 is None else {"int8_keep_fp32": args.int8_keep_fp32}),
            ),
            answers=args.answers,
            include_source_answers=not args.no_source_answers,
            opset=args.opset,
            max_length=args.max_length,
            validate=args.validate,
            overwrite=args.overwrite,
        )
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for variant, info in manifest.variants.items():
        print(f"{variant:5s} {info['file']:18s} {info['size_bytes'] / 1e6:8.2f} MB")
    print(
        f"answers: {manifest.answers_count} questions; manifest: {Path(args.out) / 'manifest.json'}"
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from fedgrpo.edge.service import serve_forever
    from fedgrpo.edge.service_config import ServiceConfig

    scorer = _load_scorer(args)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    config = ServiceConfig(
        model_name=args.name or scorer.name,
        token=token,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        timeout=args.timeout,
        max_body_bytes=args.max_body_bytes,
        max_batch=args.max_batch,
        max_string_chars=args.max_string_chars,
        parameters=(("variant", scorer.config.variant), ("me_mode", scorer.config.me_mode)),
    )

    def started(port: int) -> None:
        print(
            f"fedgrpo-edge serving {config.model_name!r} ({scorer.config.variant}) on "
            f"http://{args.host}:{port}  auth={'on' if token else 'off'}",
            flush=True,
        )

    asyncio.run(serve_forever(scorer, config, args.host, args.port, on_started=started))
    return 0


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    handle = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    rows: list[dict[str, Any]] = []
    try:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("question"), str)
                or not isinstance(row.get("completion"), str)
            ):
                raise ValueError(f"{path}:{number}: need string 'question' and 'completion'")
            rows.append(row)
    finally:
        if handle is not sys.stdin:
            handle.close()
    return rows


def _cmd_score(args: argparse.Namespace) -> int:
    if not 0.0 <= args.format_weight <= 1.0:
        print("error: --format-weight must be in [0, 1]", file=sys.stderr)
        return 2
    rows = _read_jsonl(args.input)
    scorer = _load_scorer(args)
    for start in range(0, len(rows), args.batch_size):
        chunk = rows[start : start + args.batch_size]
        rewards = scorer.score(
            [r["question"] for r in chunk],
            [r["completion"] for r in chunk],
            args.mode,
            args.format_weight,
        )
        for row, reward in zip(chunk, rewards):
            print(json.dumps({**row, "reward": round(reward, 6)}, ensure_ascii=False))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    manifest = Manifest.read(args.model)
    print(manifest.to_json())
    if args.verify:
        for name in manifest.files:
            manifest.verify_file(args.model, name)
        print(f"ok: {len(manifest.files)} files match their checksums", file=sys.stderr)
    for variant in manifest.variants:
        variant_filename(variant)  # raises on an unknown variant name
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    commands = {"export": _cmd_export, "serve": _cmd_serve, "score": _cmd_score, "info": _cmd_info}
    try:
        return commands[args.command](args)
    except (ManifestError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
