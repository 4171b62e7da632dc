"""One consistent command line on both tools: --version, logging flags, bare command -> help,
--out everywhere (old spellings still work, deprecated), defaults in every --help, clean exits
on a closed pipe and in an install without the server extra, shipped scenarios."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedgrpo.edge.cli import build_parser as edge_parser
from fedgrpo.edge.cli import main as edge_main
from fedgrpo.edge.cli_parser import package_version
from fedgrpo.experiments.cli import build_parser, main
from fedgrpo.scenarios.loader import shipped_scenarios

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (nested) subcommand parser by its prog."""
    out = {parser.prog: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.update(_subparsers(sub))
    return out


@pytest.mark.parametrize("entry", [main, edge_main])
def test_version(entry: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        entry(["--version"])  # type: ignore[operator]
    assert exit_.value.code == 0
    assert capsys.readouterr().out.split()[-1] == package_version()


@pytest.mark.parametrize("entry", [main, edge_main])
def test_bare_command_prints_help(entry: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert entry([]) == 0  # type: ignore[operator]
    assert "usage:" in capsys.readouterr().out


def test_group_commands_print_their_help(capsys: pytest.CaptureFixture[str]) -> None:
    for group in ("models", "graph", "scenarios"):
        assert main([group]) == 0
        assert f"usage: fedgrpo {group}" in capsys.readouterr().out


@pytest.mark.parametrize("parser", [build_parser(), edge_parser()], ids=["fedgrpo", "edge"])
def test_same_logging_flags(parser: argparse.ArgumentParser) -> None:
    for argv, level in ((["-v"], "DEBUG"), (["--verbose"], "DEBUG"), (["-q"], "WARNING"),
                        (["--log-level", "error"], "ERROR"), ([], "INFO")):  # fmt: skip
        args = parser.parse_args([*argv, "scenarios" if parser.prog == "fedgrpo" else "info"])
        got = "DEBUG" if args.verbose else "WARNING" if args.quiet else args.log_level
        assert got == level
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-level", "loud"])


def test_every_help_shows_defaults_and_positionals_have_help() -> None:
    for parser in (build_parser(), edge_parser()):
        for prog, sub in _subparsers(parser).items():
            sub.format_help()  # every help renders
            for action in sub._actions:
                if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                    continue
                assert action.help, f"{prog} {action.dest}: no help text"
                shown = action.default not in (None, False, argparse.SUPPRESS)
                if shown and action.option_strings and action.nargs != 0:
                    assert "default" in sub._get_formatter()._get_help_string(action), (  # type: ignore[attr-defined]
                        f"{prog} {action.option_strings[0]}: default not shown"
                    )
    sweep = _subparsers(build_parser())["fedgrpo sweep"].format_help()
    assert "(default: 1)" in sweep and "(default: 2)" in sweep
    assert "(default: final_mean_accuracy)" in sweep and "--rounds" in sweep


def test_one_output_flag_with_deprecated_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for cmd, old in (("run", "--out-root"), ("sweep", "--out-root"), ("demo", "--out-root"),
                     ("graph show", "--save")):  # fmt: skip
        words = cmd.split()
        tail = ["--grid", "a=1"] if cmd == "sweep" else []
        pos = [] if cmd == "demo" else ["f.yaml"]
        assert parser.parse_args([*words, *pos, *tail, "--out", "o1"]).out == "o1"
        assert parser.parse_args([*words, *pos, *tail, old, "o2"]).out == "o2"
        err = capsys.readouterr().err
        assert f"{old} is deprecated; use --out" in err
        assert "deprecated alias of --out" in _subparsers(parser)[f"fedgrpo {cmd}"].format_help()
    for cmd in (["report", "d"], ["models", "eval"]):
        assert parser.parse_args([*cmd, "--out", "x"]).out == "x"


def test_models_eval_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["models", "eval", "--per-domain", "-3"])
    assert "must be >= 1, got -3" in capsys.readouterr().err
    text = " ".join(_subparsers(parser)["fedgrpo models eval"].format_help().split())
    assert "train the models missing from the cache" in text


def test_serve_port_default_and_info_model_flag() -> None:
    parser = edge_parser()
    assert parser.parse_args(["serve", "--model", "m"]).port == 8000
    assert parser.parse_args(["info", "--model", "m"]).model == Path("m")
    assert parser.parse_args(["info", "m"]).model_dir == Path("m")


def test_info_needs_one_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert edge_main(["info"]) == 2
    assert "fedgrpo-edge info --model DIR" in capsys.readouterr().err
    assert edge_main(["info", "a", "--model", "b"]) == 2
    assert "give one" in capsys.readouterr().err


def test_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """``fedgrpo ... | head``: the reader is gone before we write; no traceback."""
    for tool in ("fedgrpo.experiments.cli", "fedgrpo.edge.cli"):
        proc = subprocess.Popen(
            [sys.executable, "-m", tool, "--help"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=ENV, cwd=tmp_path,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert "Traceback" not in err and "BrokenPipe" not in err, err
    shell = subprocess.run(
        f"{sys.executable} -m fedgrpo.experiments.cli scenarios list | head -1",
        shell=True, capture_output=True, text=True, env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert shell.stdout.strip() and "Traceback" not in shell.stderr


def test_without_server_extra_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['pydantic'] = None; sys.modules['yaml'] = None\n"
        "from fedgrpo.experiments.cli import main\n"
        "sys.exit(main(['validate', 'x.yaml']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=ENV, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "pip install 'fedgrpo[server]'" in done.stderr and "Traceback" not in done.stderr


def test_scenarios_list_and_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shipped = shipped_scenarios()
    assert {"quickstart", "live-template", "stragglers"} <= set(shipped)
    assert main(["scenarios", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in shipped)
    dest = tmp_path / "mine.yaml"
    assert main(["scenarios", "copy", "quickstart", str(dest)]) == 0
    assert dest.read_text() == shipped["quickstart"].read_text()
    assert main(["scenarios", "copy", "quickstart", str(dest)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["scenarios", "copy", "quickstart", str(dest), "--force"]) == 0
    assert main(["scenarios", "copy", "quickstart", str(tmp_path)]) == 0
    assert (tmp_path / "quickstart.yaml").exists()
    assert main(["scenarios", "copy", "quikstart"]) == 2
    assert "not a shipped scenario; known: " in capsys.readouterr().err
    assert main(["validate", str(dest)]) == 0
