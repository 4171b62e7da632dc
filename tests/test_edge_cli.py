"""``fedgrpo-edge`` subcommands: score offline, info, and serve as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from edge_reference import TinyBuild

from fedgrpo.edge.cli import build_parser, main
from fedgrpo.edge.protocol import ScoreRequest, dumps, encode_request, parse_response
from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig

pytest_plugins = ["edge_fixtures"]
ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand() -> None:
    text = build_parser().format_help()
    for command in ("export", "serve", "score", "info"):
        assert command in text
    with pytest.raises(SystemExit):
        main(["serve", "--model", "x", "--port", "70000"])


def test_score_jsonl(
    gpt2_build: TinyBuild, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = gpt2_build.table_items[:2] + gpt2_build.other_items[:2]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"question": i.question, "completion": i.completion, "k": n}) + "\n" for n, i in enumerate(items)))  # fmt: skip
    assert main(["score", "--model", str(gpt2_build.export_dir), "--variant", "fp32", "--threads", "1",
                 "--mode", "likelihood", "--batch-size", "3", str(path)]) == 0  # fmt: skip
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["k"] for r in rows] == [0, 1, 2, 3]
    scorer = EdgeScorer.load(gpt2_build.export_dir, ScorerConfig(variant="fp32"))
    direct = scorer.score([i.question for i in items], [i.completion for i in items], "likelihood")
    assert [r["reward"] for r in rows] == pytest.approx(direct, abs=1e-5)
    path.write_text('{"question": 1}\n')
    assert main(["score", "--model", str(gpt2_build.export_dir), str(path)]) == 2
    assert "question" in capsys.readouterr().err


def test_serve_process_health_infer_and_sigterm(gpt2_build: TinyBuild) -> None:
    env = {**os.environ, "FEDGRPO_EDGE_TOKEN": "env-token", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedgrpo.edge.cli", "serve", "--model", str(gpt2_build.export_dir),
         "--port", "0", "--name", "expert-add", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving 'expert-add' (int8)" in line and "auth=on" in line, line
        base = line.split("on ")[-1].split()[0]
        with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=10) as r:
            assert r.status == 200
        request = ScoreRequest("cli-1", ("12+34",), (" 2+4=6,1+3+0=4\nanswer: 46",), "format")
        req = urllib.request.Request(
            f"{base}/v2/models/expert-add/infer",
            data=dumps(encode_request(request)),
            headers={"Authorization": "Bearer env-token", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert parse_response(json.loads(r.read()), 1, "cli-1").values == (1.0,)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/v2/models/expert-add", timeout=10)
        assert err.value.code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert "GET /v2/health/ready 200" in log and "rid=" in log  # access log
        assert "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_info_takes_model_like_serve_and_score(
    gpt2_build: TinyBuild, capsys: pytest.CaptureFixture[str]
) -> None:
    export = str(gpt2_build.export_dir)
    assert main(["info", "--model", export, "--verify"]) == 0
    by_flag = capsys.readouterr()
    assert json.loads(by_flag.out)["variants"] and "ok:" in by_flag.err
    assert main(["info", export]) == 0  # the older positional form still works
    assert capsys.readouterr().out == by_flag.out


def test_serve_timeout_flags_parse_and_reject_bad_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fedgrpo.edge.cli_parser import build_parser

    args = build_parser().parse_args(
        [
            "serve",
            "--model",
            "m",
            "--keepalive-timeout",
            "5",
            "--header-timeout",
            "2",
            "--body-timeout",
            "7",
            "--shutdown-timeout",
            "9",
            "--drain-grace",
            "0.5",
        ]
    )
    assert (args.keepalive_timeout, args.header_timeout, args.body_timeout) == (5.0, 2.0, 7.0)
    assert (args.shutdown_timeout, args.drain_grace) == (9.0, 0.5)
    defaults = build_parser().parse_args(["serve", "--model", "m"])
    assert (defaults.keepalive_timeout, defaults.header_timeout) == (15.0, 10.0)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["serve", "--model", "m", "--header-timeout", "-1"])
    assert exc.value.code == 2 and "seconds >= 0" in capsys.readouterr().err
