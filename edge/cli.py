"""``fedgrpo-edge``: export a model (workstation), serve / score / inspect it (device).

Only ``export`` needs torch, transformers and optimum, and it imports them lazily, so the
device-side subcommands run with ``pip install 'fedgrpo[edge]'`` alone. The argument parser
is in :mod:`fedgrpo.edge.cli_parser`; this module runs the commands.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from fedgrpo.edge.cli_parser import TOKEN_ENV, build_parser, configure_logging
from fedgrpo.edge.device_rewards import DeviceScorer, from_arguments
from fedgrpo.edge.manifest import Manifest, ManifestError, variant_filename

__all__ = ["TOKEN_ENV", "build_parser", "main"]

log = logging.getLogger("fedgrpo.edge.cli")


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
        keepalive_timeout=args.keepalive_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        shutdown_timeout=args.shutdown_timeout,
        drain_grace=args.drain_grace,
        parameters=(("variant", scorer.config.variant), ("me_mode", scorer.config.me_mode)),
    )
    device, draws = from_arguments(args)  # --behaviour / --privacy (edge/device_rewards.py)
    if device.active:
        scorer = DeviceScorer(scorer, device, draws)
        config = replace(config, parameters=config.parameters + device.parameters())

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
    for flag, value in (("--format-weight", args.format_weight), ("--partial-credit", args.partial_credit)):
        if not 0.0 <= value <= 1.0:
            print(f"error: {flag} must be in [0, 1], got {value}", file=sys.stderr)
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
            args.partial_credit,
        )
        for row, reward in zip(chunk, rewards):
            print(json.dumps({**row, "reward": round(reward, 6)}, ensure_ascii=False))
    return 0


def _info_dir(args: argparse.Namespace) -> Path:
    """``info --model DIR`` or the older ``info DIR``; one of them, or both the same."""
    if args.model is None and args.model_dir is None:
        raise ValueError("info needs the export directory: fedgrpo-edge info --model DIR")
    if args.model is not None and args.model_dir is not None and args.model != args.model_dir:
        raise ValueError(
            f"info got two directories ({args.model_dir} and --model {args.model}); give one"
        )
    return Path(args.model if args.model is not None else args.model_dir)


def _cmd_info(args: argparse.Namespace) -> int:
    model = _info_dir(args)
    manifest = Manifest.read(model)
    print(manifest.to_json())
    if args.verify:
        for name in manifest.files:
            manifest.verify_file(model, name)
        print(f"ok: {len(manifest.files)} files match their checksums", file=sys.stderr)
    for variant in manifest.variants:
        variant_filename(variant)  # raises on an unknown variant name
    return 0


def silence_broken_pipe() -> int:
    """After stdout's reader went away (``... | head``): point stdout at /dev/null so the
    interpreter's final flush cannot fail too; the exit status of a SIGPIPE death."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests)
        pass
    finally:
        os.close(devnull)
    return 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``fedgrpo-edge`` command; no command prints the help."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return silence_broken_pipe()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    configure_logging(args)
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
