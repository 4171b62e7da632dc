"""The ``fedgrpo`` console entry point (``fedgrpo.experiments.cli:main``).

The server-side command line: ``demo``, ``models build|eval`` (the offline model zoo),
``graph show`` (the confidence graph) and the scenario commands ``validate``, ``run``,
``sweep`` and ``report`` from :mod:`fedgrpo.experiments.commands`. Heavy imports (torch, the
zoo, the runner) happen inside the handlers, so ``--help`` and ``validate`` stay fast. The
device side has its own entry point, ``fedgrpo-edge`` (:mod:`fedgrpo.edge.cli`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.errors import FedGRPOError


def _models_build(args: argparse.Namespace) -> int:
    from fedgrpo.server.zoo.commands import build_default_zoo

    spec = None
    if args.scenario:
        from fedgrpo.experiments.context import zoo_spec
        from fedgrpo.scenarios.loader import load_scenario

        spec = zoo_spec(load_scenario(Path(args.scenario)))
    build_default_zoo(Path(args.models_dir), spec, workers=args.workers)
    return 0


def _models_eval(args: argparse.Namespace) -> int:
    from fedgrpo.server.zoo.commands import build_default_zoo, evaluate_zoo

    results = build_default_zoo(Path(args.models_dir), workers=args.workers)
    out = Path(args.out) if args.out else Path(args.models_dir) / "eval.json"
    evaluate_zoo(results, per_domain=args.per_domain, out_json=out)
    return 0


def _graph_show(args: argparse.Namespace) -> int:
    from fedgrpo.experiments.graph import cmd_graph_show

    return cmd_graph_show(args)


def _demo(args: argparse.Namespace) -> int:
    """``fedgrpo demo``: ``fedgrpo run SCENARIO`` with the model cache in ``--models-dir``."""
    import os

    from fedgrpo.experiments.commands import main as scenario_main

    os.environ.setdefault("FEDGRPO_MODELS_DIR", args.models_dir)
    print(f"[fedgrpo] demo: running {args.scenario} (models cached in {args.models_dir})")
    return scenario_main(["run", args.scenario, "--out-root", args.out_root])


def build_parser() -> argparse.ArgumentParser:
    """The ``fedgrpo`` parser with every subcommand; each sets ``func`` to its handler."""
    parser = argparse.ArgumentParser(
        prog="fedgrpo",
        description="Reward-only federated GRPO: build models, run scenarios, simulate fleets.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_models(sub)
    _add_graph(sub)

    from fedgrpo.experiments.commands import register

    register(sub)
    return parser


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser("demo", help="build the default models and run the default scenario")
    demo.add_argument("--scenario", default="scenarios/quickstart.yaml", help="scenario to run")
    demo.add_argument("--models-dir", default="models", help="model cache directory")
    demo.add_argument("--out-root", default="runs", help="parent of runs/<scenario>/<timestamp>")
    demo.set_defaults(func=_demo)


def _add_models(sub: Any) -> None:
    models = sub.add_parser("models", help="build and evaluate the offline model zoo")
    msub = models.add_subparsers(dest="models_command", required=True)
    build = msub.add_parser("build", help="train (or reuse from cache) the experts and server base")
    build.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="build the models this scenario uses (default: the default zoo)",
    )
    build.add_argument("--models-dir", default="models", help="model cache directory")
    build.add_argument("--workers", type=int, default=2, help="parallel training processes")
    build.set_defaults(func=_models_build)
    ev = msub.add_parser("eval", help="accuracy of every model on every domain (table + JSON)")
    ev.add_argument("--models-dir", default="models", help="model cache directory")
    ev.add_argument("--workers", type=int, default=2, help="parallel training processes")
    ev.add_argument(
        "--per-domain", type=int, default=None, help="test items per domain (default all)"
    )
    ev.add_argument("--out", default=None, help="JSON output (default MODELS_DIR/eval.json)")
    ev.set_defaults(func=_models_eval)


def _add_graph(sub: Any) -> None:
    graph = sub.add_parser("graph", help="inspect the confidence graph (expert selection)")
    gsub = graph.add_subparsers(dest="graph_command", required=True)
    show = gsub.add_parser(
        "show", help="neighbours, competence scores and chosen experts for sample questions"
    )
    show.add_argument(
        "file", metavar="SCENARIO", help="scenario YAML (its clients and server model)"
    )
    show.add_argument("--questions", type=int, default=5, help="held-out questions to show")
    show.add_argument("--neighbours", type=int, default=5, help="neighbours printed per question")
    show.add_argument("--set", action="append", metavar="KEY=VALUE", help="scenario override")
    show.add_argument("--save", default=None, help="also write the competence matrix (JSON) here")
    show.set_defaults(func=_graph_show)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, set up logging, run the handler; 2 on a FedGRPOError, 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except FedGRPOError as exc:
        print(f"fedgrpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedgrpo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
