"""Scenario subcommands for ``fedgrpo``: validate, run, sweep, report, scenarios list|copy.

:mod:`fedgrpo.experiments.cli` (the ``fedgrpo`` entry point) adds them to its parser with
:func:`register`; every handler returns an exit code and raises FedGRPOError subclasses
(ScenarioError) for the caller to print.
The runner is looked up lazily (``fedgrpo.experiments.runner.run_scenario``) so ``validate`` and
``report`` never import torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedgrpo.edge.cli_parser import (
    DefaultsHelpFormatter,
    DeprecatedAlias,
    non_negative_int,
    positive_int,
)
from fedgrpo.experiments.models_dir import add_models_dir
from fedgrpo.scenarios.checks import environment_errors
from fedgrpo.scenarios.loader import (
    load_run_scenario,
    load_scenario,
    new_run_dir,
    shipped_scenarios,
    validate_files,
)
from fedgrpo.scenarios.schema import Scenario, ScenarioError


def _runner() -> Any:
    from fedgrpo.experiments.runner import run_scenario  # type: ignore[import-not-found,unused-ignore]

    return run_scenario


def cmd_validate(args: argparse.Namespace) -> int:
    """``fedgrpo validate FILE...``: every problem of every file on stderr (field, cross-field
    and this machine's: missing local model paths, unset token_env variables); 1 if any."""
    results = validate_files(args.files, environment=True)
    bad = 0
    for path, problems in results.items():
        if problems:
            bad += 1
            for line in problems:
                print(line, file=sys.stderr)
        elif not args.quiet:
            print(f"{path}: ok")
    return 1 if bad else 0


def _overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides, plus ``rounds=N`` from ``--rounds``."""
    sets = list(args.set or [])
    if getattr(args, "rounds", None) is not None:
        sets.append(f"rounds={args.rounds}")
    return sets


def prepare_run(args: argparse.Namespace) -> tuple[Scenario, Path, bool]:
    """(scenario, run_dir, resume) for ``fedgrpo run``; the run dir holds scenario.yaml."""
    sets = _overrides(args)
    if args.resume:
        run_dir = Path(args.resume)
        scenario = load_run_scenario(run_dir, sets)
        if args.file:
            other = load_scenario(args.file)
            if other.name != scenario.name:
                raise ScenarioError(
                    [
                        f"{args.file}: scenario {other.name!r} does not match the run in {run_dir} "
                        f"({scenario.name!r}); drop FILE or resume the right directory"
                    ]
                )
        if sets:
            from fedgrpo.scenarios.loader import RESOLVED_NAME, dump_scenario

            dump_scenario(scenario, run_dir / RESOLVED_NAME)
        return scenario, run_dir, True
    if not args.file:
        raise ScenarioError(["fedgrpo run: give a scenario FILE or --resume RUN_DIR"])
    scenario = load_scenario(args.file, sets)
    _check_environment(scenario, str(args.file))
    return scenario, new_run_dir(scenario, args.out), False


def _check_environment(scenario: Scenario, source: str) -> None:
    """Stop before a run directory exists if this machine lacks what the scenario needs."""
    problems = [f"{source}: {path}: {msg}" for path, msg in environment_errors(scenario)]
    if problems:
        raise ScenarioError(problems)


def cmd_run(args: argparse.Namespace) -> int:
    """``fedgrpo run``: run (or resume) a scenario, then plots, the summary and before/after."""
    from fedgrpo.experiments.report import before_after_text, make_report, summary_table

    scenario, run_dir, resume = prepare_run(args)
    run_scenario = _runner()
    print(
        f"[fedgrpo] {'resuming' if resume else 'running'} {scenario.name!r} ({scenario.mode}) in {run_dir}"
    )
    try:
        summary = run_scenario(scenario, run_dir, resume)
    except KeyboardInterrupt:
        print(
            f"\n[fedgrpo] interrupted; continue with: fedgrpo run --resume {run_dir}",
            file=sys.stderr,
        )
        raise
    if scenario.outputs.plots:
        make_report([run_dir], run_dir / "plots")
    print(summary_table([run_dir]))
    if summary.get("initial_accuracy"):
        print(before_after_text(summary))
    print(f"[fedgrpo] outputs in {run_dir}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """``fedgrpo sweep``: run the grid, print its comparison table; 1 if a variant failed."""
    from fedgrpo.experiments.sweep import run_sweep

    result = run_sweep(
        args.file,
        args.grid,
        seeds=args.seeds,
        workers=args.workers,
        out_root=args.out,
        overrides=_overrides(args),
        metric=args.metric,
        backend=args.backend,
        address=args.address,
    )
    print((result.sweep_dir / "comparison.md").read_text(encoding="utf-8"))
    print(f"[fedgrpo] sweep outputs in {result.sweep_dir}")
    for r in result.failed:
        print(
            f"[fedgrpo] variant {r.variant.name} failed: {r.error.splitlines()[0]}", file=sys.stderr
        )
    return 1 if result.failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """``fedgrpo report RUN_DIR...``: redraw plots and tables of finished runs."""
    from fedgrpo.experiments.report import make_report, summary_table

    dirs = [Path(d) for d in args.run_dirs]
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        raise ScenarioError([f"{d}: run directory not found" for d in missing])
    try:
        files = make_report(dirs, args.out)
    except FileNotFoundError as exc:
        raise ScenarioError([str(exc)]) from None
    print(summary_table(dirs))
    for f in files:
        print(f"  wrote {f}")
    return 0


def cmd_scenarios_list(args: argparse.Namespace) -> int:
    """``fedgrpo scenarios list``: the shipped scenarios, one per line with its description."""
    for name, path in shipped_scenarios().items():
        print(f"{name:18s} {_description(path)}")
    return 0


def _description(path: Path) -> str:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ""
    return str(data.get("description", "")).strip() if isinstance(data, dict) else ""


def cmd_scenarios_copy(args: argparse.Namespace) -> int:
    """``fedgrpo scenarios copy NAME [DEST]``: a shipped scenario as an editable file."""
    shipped = shipped_scenarios()
    if args.name not in shipped:
        raise ScenarioError(
            [f"{args.name!r} is not a shipped scenario; known: {', '.join(shipped)}"]
        )
    dest = Path(args.dest) if args.dest else Path(f"{args.name}.yaml")
    if dest.is_dir():
        dest = dest / f"{args.name}.yaml"
    if dest.exists() and not args.force:
        raise ScenarioError([f"{dest}: already exists; pick another DEST or add --force"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(shipped[args.name].read_text(encoding="utf-8"), encoding="utf-8")
    print(f"[fedgrpo] wrote {dest}; edit it, then: fedgrpo validate {dest} && fedgrpo run {dest}")
    return 0


def _parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, formatter_class=DefaultsHelpFormatter
    )
    return p


def add_out(p: argparse.ArgumentParser, default: str | None, help: str, old: str | None) -> None:
    """``--out``, the one output flag of every command, plus its old spelling ``old``."""
    p.add_argument("--out", default=default, help=help)
    if old:
        p.add_argument(old, dest="out", action=DeprecatedAlias, new="--out")


def register(subparsers: Any) -> None:
    """Add ``validate``, ``run``, ``sweep``, ``report`` and ``scenarios`` to an argparse
    subparsers object."""
    p = _parser(subparsers, "validate", "check scenario files without running them")
    p.add_argument("files", nargs="+", metavar="FILE", help="scenario YAML files")
    p.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    p.set_defaults(func=cmd_validate)
    _add_run(subparsers)
    _add_sweep(subparsers)
    p = _parser(subparsers, "report", "redraw plots and compare finished runs")
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (from run or sweep)"
    )
    add_out(p, None, "output directory (default: RUN_DIR/plots for one run)", None)
    p.set_defaults(func=cmd_report)
    _add_scenarios(subparsers)


def help_handler(parser: argparse.ArgumentParser) -> Any:
    """A handler printing ``parser``'s help (``fedgrpo scenarios`` with no subcommand)."""

    def show(args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return show


def _add_scenarios(subparsers: Any) -> None:
    p = _parser(subparsers, "scenarios", "list the shipped scenarios or copy one to edit")
    sub = p.add_subparsers(dest="scenarios_command", metavar="COMMAND")
    p.set_defaults(func=help_handler(p))
    ls = _parser(sub, "list", "names and descriptions of the shipped scenarios")
    ls.set_defaults(func=cmd_scenarios_list)
    cp = _parser(sub, "copy", "write a shipped scenario to a file you can edit")
    cp.add_argument("name", metavar="NAME", help="shipped scenario (see: fedgrpo scenarios list)")
    cp.add_argument(
        "dest", nargs="?", metavar="DEST", help="file or directory (default: ./NAME.yaml)"
    )
    cp.add_argument("--force", action="store_true", help="overwrite an existing DEST")
    cp.set_defaults(func=cmd_scenarios_copy)


def _add_run(subparsers: Any) -> None:
    p = _parser(subparsers, "run", "run a scenario (or resume a run)")
    p.add_argument("file", nargs="?", metavar="FILE", help="scenario YAML (optional with --resume)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. round_policy.deadline_s=5",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    _add_rounds(p)
    add_models_dir(p)
    add_out(p, "runs", "parent of OUT/<scenario>/<timestamp>", "--out-root")
    p.set_defaults(func=cmd_run)


def _add_rounds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=positive_int, help="shorthand for --set rounds=N")


def _add_sweep(subparsers: Any) -> None:
    p = _parser(subparsers, "sweep", "run a grid of variants x seeds in parallel")
    p.add_argument("file", metavar="FILE", help="scenario YAML every variant starts from")
    p.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="grid axis (repeatable; cartesian product)",
    )
    p.add_argument(
        "--seeds", type=positive_int, default=1, help="seeds per grid point (from the file's seed)"
    )
    p.add_argument(
        "--workers", type=non_negative_int, default=2, help="parallel processes (0 = in-process)"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override for every variant")
    p.add_argument(
        "--backend", choices=("local", "ray"), default="local", metavar="NAME",
        help="local (worker processes here) or ray (Ray tasks; extra 'ray'; local Ray or --address)",
    )  # fmt: skip
    p.add_argument("--address", metavar="ADDR", help="Ray cluster address (ray://host:10001, auto)")
    _add_rounds(p)
    p.add_argument("--metric", default="final_mean_accuracy", help="summary key to compare")
    add_models_dir(p)
    add_out(p, "runs", "parent of OUT/<scenario>-sweep/<timestamp>", "--out-root")
    p.set_defaults(func=cmd_sweep)


def main(argv: Sequence[str] | None = None) -> int:
    """Only the scenario subcommands (``python -m fedgrpo.experiments.commands``); the
    ``fedgrpo`` entry point (:mod:`fedgrpo.experiments.cli`) has these and the rest."""
    from fedgrpo.errors import FedGRPOError

    parser = argparse.ArgumentParser(prog="fedgrpo", formatter_class=DefaultsHelpFormatter)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FedGRPOError as exc:
        print(f"fedgrpo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
