"""Emulate mode: edge processes, startup errors, cleanup, and the end-to-end run.

The end-to-end test (``slow``) runs ``scenarios/emulate-local.yaml`` (shrunk with overrides)
with 3 real ``fedgrpo-edge serve`` processes built from a tiny zoo, kills one after round 1,
and checks the run finishes with that client's rewards masked and every process stopped.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedgrpo.experiments.runtimes.emulate as emulate
from fedgrpo.experiments.runtimes.emulate import EmulatedFleet, EmulateError
from fedgrpo.scenarios.loader import load_scenario
from fedgrpo.scenarios.schema import Scenario

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def one_client() -> Any:
    s = Scenario.model_validate(
        {"name": "t", "mode": "emulate", "clients": {"groups": [{"name": "pi", "profile": "rpi4"}]},
         "selection": {"M": 1}}
    )  # fmt: skip
    return s.client_list()[0]


def test_startup_failure_names_client_and_log(tmp_path: Path) -> None:
    fleet = EmulatedFleet(tmp_path / "logs")
    try:
        fleet.launch(one_client(), tmp_path / "no-such-export", "fp32", "127.0.0.1")
        with pytest.raises(EmulateError) as err:
            fleet.wait_ready(30)
    finally:
        fleet.stop()
    msg = str(err.value)
    assert "'pi-0'" in msg and "exited with code" in msg
    assert str(tmp_path / "logs" / "pi-0.log") in msg


def test_startup_timeout_then_every_process_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a process that claims a port but never becomes ready, and ignores SIGTERM
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('fedgrpo-edge serving x on http://127.0.0.1:9', flush=True); time.sleep(120)"
    )
    monkeypatch.setattr(emulate, "edge_command", lambda *a: [sys.executable, "-c", script])
    monkeypatch.setattr(emulate, "STOP_GRACE_S", 0.5)
    fleet = EmulatedFleet(tmp_path / "logs")
    try:
        edge = fleet.launch(one_client(), tmp_path, "fp32", "127.0.0.1")
        with pytest.raises(EmulateError) as err:
            fleet.wait_ready(1.0)
        assert "not ready after 1 s" in str(err.value) and "pi-0.log" in str(err.value)
        assert edge.port == 9
    finally:
        fleet.stop()
    assert not alive(edge.proc.pid)
    fleet.stop()  # idempotent


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_edge_processes_die_with_a_killed_server(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    child = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib, time\n"
         "import fedgrpo.experiments.runtimes.emulate as em\n"
         "from tests.test_emulate import one_client\n"
         "em.edge_command = lambda *a: [sys.executable, '-c', 'import time; time.sleep(120)']\n"
         f"fleet = em.EmulatedFleet(pathlib.Path({str(tmp_path)!r}) / 'logs')\n"
         "edge = fleet.launch(one_client(), pathlib.Path('.'), 'fp32', '127.0.0.1')\n"
         f"pathlib.Path({str(child)!r}).write_text(str(edge.proc.pid))\n"
         "time.sleep(120)\n"],
        cwd=str(LIBRARY.parent),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not child.exists() or not child.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        pid = int(child.read_text())
        assert alive(pid)
        parent.send_signal(signal.SIGKILL)  # no atexit, no closer: only the kernel can help
        parent.wait(10)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


# --------------------------------------------------------------------------- end to end


def test_emulate_end_to_end_with_a_killed_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiny_zoo import use_tiny_zoo

    from fedgrpo.experiments.runner import run_scenario

    use_tiny_zoo(monkeypatch, tmp_path / "models")

    s = load_scenario(
        LIBRARY / "emulate-local.yaml",
        [
            "rounds=3", "selection.selector=all", "selection.aux_size=6", "selection.L=3",
            # split: each client scores its own shard, so a dead client leaves holes
            "selection.dispatch=split",
            "server.grpo.questions_per_round=2", "server.grpo.group_size=3",
            "server.grpo.max_new_tokens=6",
            "tasks.train_per_domain=40", "tasks.test_per_domain=4", "tasks.aux_pool_per_domain=4",
            "eval.per_domain=2", "eval.every=0", "checkpoint.every=0", "outputs.progress=false",
            "outputs.plots=false", "round_policy.max_retries=0",
            # no random faults: the only fault is the kill
            "sim.dropout.fail=0", "sim.dropout.offline=0",
        ],
    )  # fmt: skip
    killed = 0  # the 'pi' client
    seen: dict[str, Any] = {"results": [], "pids": []}
    real_factory = emulate.make_emulate_gatherer

    def factory(ctx: Any) -> Any:
        gatherer, closer = real_factory(ctx)
        seen["pids"] = [e.proc.pid for e in gatherer.fleet.edges]
        real_gather = gatherer.gather

        def gather(request: Any, rng: Any) -> Any:
            result = real_gather(request, rng)
            seen["results"].append((request, result))
            if len(seen["results"]) == 1:  # kill the pi's edge process after round 1
                gatherer.fleet.edges[killed].proc.kill()
                gatherer.fleet.edges[killed].proc.wait(10)
            return result

        gatherer.gather = gather
        return gatherer, closer

    monkeypatch.setattr(emulate, "make_emulate_gatherer", factory)
    summary = run_scenario(s, tmp_path / "run")

    assert summary["status"] == "finished" and summary["rounds_completed"] == 3
    results = seen["results"]
    assert len(results) == 3
    _, first = results[0]
    assert first.stats["answered"] > 0
    for request, result in results[1:]:
        r = result.rewards
        slots = [row.index(killed) for row in request.experts]
        for q, e in enumerate(slots):
            assert np.isnan(r[q, :, e]).all()  # the dead client's rewards are missing, not 0
        assert result.stats["failed"] >= len(request.experts)
        assert "rpi4" not in result.stats["participation"]
        assert result.stats["extra"]["edge_processes_alive"] == 2
        # the other two clients still answered: 2 of the 3 candidates of each group rewarded
        for q in range(r.shape[0]):
            assert (~np.isnan(r[q]).all(axis=1)).sum() == 2
    assert seen["pids"] and not any(alive(p) for p in seen["pids"])
    logs = list((tmp_path / "models" / "emulate-logs").glob("*/pi-0.log"))
    assert logs and "serving" in logs[0].read_text()
