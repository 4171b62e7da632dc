"""The ``fedgrpo`` console entry point (``fedgrpo.experiments.cli:main``).

The server-side command line: ``demo``, ``models build|eval`` (the offline model zoo),
``graph show`` (the confidence graph) and the scenario commands ``validate``, ``run``,
``sweep``, ``report`` and ``scenarios list|copy`` from :mod:`fedgrpo.experiments.commands`.
Heavy imports (torch, the zoo, the runner) happen inside the handlers, so ``--help`` and
``validate`` stay fast. The device side has its own entry point, ``fedgrpo-edge``
(:mod:`fedgrpo.edge.cli`); both share ``--version``, the logging flags and the help formatter
(:mod:`fedgrpo.edge.cli_parser`). Every output location is ``--out``; the older ``--out-root``
and ``--save`` still work as deprecated aliases.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.edge.cli import silence_broken_pipe
from fedgrpo.edge.cli_parser import (
    DefaultsHelpFormatter,
    add_common_flags,
    configure_logging,
    positive_int,
)
from fedgrpo.errors import FedGRPOError
from fedgrpo.experiments.models_dir import add_models_dir, resolve_models_dir

SERVER_EXTRA = "pip install 'fedgrpo[server]'"


def _models_build(args: argparse.Namespace) -> int:
    from fedgrpo.server.zoo.commands import build_default_zoo

    spec = None
    if args.scenario:
        from fedgrpo.experiments.context import zoo_spec
        from fedgrpo.scenarios.loader import load_scenario, scenario_file

        spec = zoo_spec(load_scenario(scenario_file(args.scenario), args.set or []))
    build_default_zoo(args.models_dir, spec, workers=args.workers, prebuild_hint=False)
    return 0


def _models_eval(args: argparse.Namespace) -> int:
    from fedgrpo.server.zoo.commands import build_default_zoo, evaluate_zoo

    results = build_default_zoo(args.models_dir, workers=args.workers)
    out = Path(args.out) if args.out else args.models_dir / "eval.json"
    evaluate_zoo(results, per_domain=args.per_domain, out_json=out)
    return 0


def _graph_show(args: argparse.Namespace) -> int:
    from fedgrpo.experiments.graph import cmd_graph_show

    args.save = args.out  # graph's own name for the output file
    return cmd_graph_show(args)


def _demo(args: argparse.Namespace) -> int:
    """``fedgrpo demo``: ``fedgrpo run SCENARIO`` with the model cache in ``--models-dir``."""
    from fedgrpo.experiments.commands import main as scenario_main
    from fedgrpo.scenarios.loader import scenario_file

    scenario = str(scenario_file(args.scenario))
    print(f"[fedgrpo] demo: running {scenario} (models cached in {args.models_dir})")
    return scenario_main(["run", scenario, "--out", args.out])


def build_parser() -> argparse.ArgumentParser:
    """The ``fedgrpo`` parser with every subcommand; each sets ``func`` to its handler."""
    parser = argparse.ArgumentParser(
        prog="fedgrpo",
        description="Reward-only federated GRPO: build models, run scenarios, simulate fleets.",
        formatter_class=DefaultsHelpFormatter,
    )
    add_common_flags(parser)

    from fedgrpo.experiments.commands import help_handler, register

    parser.set_defaults(func=help_handler(parser))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_models(sub)
    _add_graph(sub)
    register(sub)
    return parser


def _add_demo(sub: Any) -> None:
    from fedgrpo.experiments.commands import add_out

    demo = sub.add_parser(
        "demo",
        formatter_class=DefaultsHelpFormatter,
        help="build the default models and run the default scenario",
    )
    demo.add_argument(
        "--scenario", default="quickstart", help="scenario file or shipped scenario name"
    )
    add_models_dir(demo)
    add_out(demo, "runs", "parent of OUT/<scenario>/<timestamp>", "--out-root")
    demo.set_defaults(func=_demo)


def _add_models(sub: Any) -> None:
    from fedgrpo.experiments.commands import help_handler

    models = sub.add_parser(
        "models",
        formatter_class=DefaultsHelpFormatter,
        help="build and evaluate the offline model zoo",
    )
    models.set_defaults(func=help_handler(models))
    msub = models.add_subparsers(dest="models_command", metavar="COMMAND")
    build = msub.add_parser(
        "build",
        formatter_class=DefaultsHelpFormatter,
        help="train (or reuse from cache) the experts and server base",
    )
    build.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="build the models this scenario uses (default: the default zoo)",
    )
    build.add_argument("--set", action="append", metavar="KEY=VALUE", help="scenario override")
    add_models_dir(build)
    build.add_argument(
        "--workers", type=positive_int, default=2, help="parallel training processes"
    )
    build.set_defaults(func=_models_build)
    ev = msub.add_parser(
        "eval",
        formatter_class=DefaultsHelpFormatter,
        help="accuracy of every model on every domain (table + JSON)",
    )
    add_models_dir(ev)
    ev.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        help="parallel processes that train the models missing from the cache first",
    )
    ev.add_argument(
        "--per-domain", type=positive_int, default=None, help="test items per domain (default: all)"
    )
    ev.add_argument("--out", default=None, help="JSON output (default MODELS_DIR/eval.json)")
    ev.set_defaults(func=_models_eval)


def _add_graph(sub: Any) -> None:
    from fedgrpo.experiments.commands import add_out, help_handler

    graph = sub.add_parser(
        "graph",
        formatter_class=DefaultsHelpFormatter,
        help="inspect the confidence graph (expert selection)",
    )
    graph.set_defaults(func=help_handler(graph))
    gsub = graph.add_subparsers(dest="graph_command", metavar="COMMAND")
    show = gsub.add_parser(
        "show",
        formatter_class=DefaultsHelpFormatter,
        help="neighbours, competence scores and chosen experts for sample questions",
    )
    show.add_argument(
        "file", metavar="SCENARIO", help="scenario YAML (its clients and server model)"
    )
    show.add_argument(
        "--questions", type=positive_int, default=5, help="held-out questions to show"
    )
    show.add_argument(
        "--neighbours", type=positive_int, default=5, help="neighbours printed per question"
    )
    show.add_argument("--set", action="append", metavar="KEY=VALUE", help="scenario override")
    add_models_dir(show)
    add_out(show, None, "also write the competence matrix (JSON) to this file", "--save")
    show.set_defaults(func=_graph_show)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, set up logging, run the handler; 2 on a FedGRPOError or a missing
    extra, 130 on Ctrl-C, 141 when stdout's reader went away (``fedgrpo run ... | head``)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        return silence_broken_pipe()
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "fedgrpo":
            raise
        print(
            f"fedgrpo: error: this command needs the server side (module {exc.name!r} is not "
            f"installed); install it with: {SERVER_EXTRA} (a device needs only fedgrpo-edge, "
            "from 'fedgrpo[edge]')",
            file=sys.stderr,
        )
        return 2


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    resolve_models_dir(args)
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
