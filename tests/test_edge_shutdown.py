"""Issue 17: shutdown is bounded by ``shutdown_timeout`` — the runner and the process — and
readiness answers 503 while the device drains."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time

import aiohttp
from test_edge_service_limits import GOOD, INFER, NAME, Recording, _post, _raw

from fedgrpo.edge.service import start_server, stop_server
from fedgrpo.edge.service_config import ServiceConfig


async def test_shutdown_is_bounded_and_readiness_drains() -> None:
    scorer = Recording(hold=5.0)  # a request that will not finish in time
    config = ServiceConfig(model_name=NAME, shutdown_timeout=1.5, drain_grace=0.5)
    runner, port = await start_server(scorer, config)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        stuck = asyncio.create_task(session.post(url + INFER, data=GOOD))
        while scorer.calls == 0:
            await asyncio.sleep(0.02)
        start = time.perf_counter()
        stopping = asyncio.create_task(stop_server(runner, config))
        await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as probe:  # a fresh connection, during the grace
            async with probe.get(url + "/v2/health/ready") as r:
                assert r.status == 503 and (await r.json())["ready"] is False
            async with probe.post(url + INFER, data=GOOD) as r:
                assert r.status == 503
        await asyncio.wait_for(stopping, 5)
        elapsed = time.perf_counter() - start
        stuck.cancel()
        with contextlib.suppress(BaseException):
            await stuck
    assert elapsed < config.shutdown_timeout + 0.5, elapsed


CHILD = """
import asyncio, sys, time
from fedgrpo.edge.service import serve_forever
from fedgrpo.edge.service_config import ServiceConfig

class Stuck:
    name = "m"
    def score(self, questions, completions, reward_mode="auto", format_weight=0.0, partial_credit=0.0):
        print("scoring", flush=True)
        time.sleep(60)
        return [0.0] * len(questions)
    def competence(self, questions, reference_answers):
        return [1.0] * len(questions)

config = ServiceConfig(model_name="m", shutdown_timeout=2.0, drain_grace=0.2, timeout=120)
asyncio.run(serve_forever(Stuck(), config, "127.0.0.1", 0, lambda port: print(port, flush=True)))
"""


async def test_sigterm_exits_within_shutdown_timeout_despite_a_stuck_scorer() -> None:
    """The process, not just the runner: a scorer thread stuck for a minute must not hold
    the exit (the old pool's threads were joined at interpreter exit)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        port = int(await asyncio.wait_for(proc.stdout.readline(), 60))
        request = asyncio.create_task(_raw(port, _post(GOOD), wait=30))
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"scoring"
        start = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)
        elapsed = time.perf_counter() - start
        request.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0 and elapsed < 2.0 + 1.0, elapsed
