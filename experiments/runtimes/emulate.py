"""Emulate mode: the real async server against real edge processes on loopback, with faults.

:func:`make_emulate_gatherer` (called by :mod:`fedgrpo.experiments.runner`):

1. exports each client's model to ONNX (cached, :func:`fedgrpo.experiments.context.export_client_model`);
2. starts one ``python -m fedgrpo.edge.cli serve --port 0`` process per client (own process group,
   bearer token via ``$FEDGRPO_EDGE_TOKEN``, log in ``<models_dir>/emulate-logs/<run>/``),
   reads the bound port from its log and waits for ``GET /v2/health/ready``
   (``emulate.startup_timeout_s``; a failure names the client and its log file);
3. puts a :class:`~fedgrpo.experiments.runtimes.fault_proxy.FaultProxy` in front of each (device profile, crash,
   availability and ``dropout`` overrides, all time-scaled by ``emulate.time_scale``);
4. returns an :class:`~fedgrpo.server.gathering.asynchronous.AsyncGatherer` over HTTP to the proxies, with
   the scenario's round policy scaled by the same ``time_scale`` (so a 30 s deadline against
   profile latencies means the same thing here as in sim mode).

The closer stops the gatherer, the proxies and every process (SIGTERM to the process group,
SIGKILL after a grace period); it is also registered with :mod:`atexit`, any error or Ctrl-C
during startup stops what was already started, and on Linux each edge process also gets
SIGTERM if the server process itself dies (``PR_SET_PDEATHSIG``), even from SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.errors import FedGRPOError
from fedgrpo.experiments.context import (
    ClientRewardTransport,
    Context,
    device_token_budget,
    export_client_model,
    models_dir,
)
from fedgrpo.experiments.runtimes.fault_proxy import FaultModel, FaultProxy, ProxyHost
from fedgrpo.scenarios.behaviour_section import edge_flags
from fedgrpo.scenarios.mapping import (
    client_rewards,
    reserve_per_question,
    round_policy,
    sim_client,
)
from fedgrpo.scenarios.schema import ClientEntry
from fedgrpo.server.gathering.asynchronous import AsyncGatherer, scale_policy
from fedgrpo.server.gathering.base import GatherRequest, GatherResult
from fedgrpo.server.gathering.transport import ClientEndpoint, HttpTransport

__all__ = [
    "EdgeProcess",
    "EmulateError",
    "EmulateGatherer",
    "EmulatedFleet",
    "make_emulate_gatherer",
]

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
_PORT_RE = re.compile(r"fedgrpo-edge serving .* on http://[^:\s]+:(\d+)")
STOP_GRACE_S = 5.0


class EmulateError(FedGRPOError):
    """An emulated edge process could not be started or became unusable."""


@dataclass
class EdgeProcess:
    client: ClientEntry
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(log unreadable)"
        return "\n".join("    " + t for t in text[-lines:])


def edge_command(model_dir: Path, variant: str, host: str, name: str) -> list[str]:
    """The serve command of one emulated client (port 0: the OS picks a free port)."""
    return [
        sys.executable, "-m", "fedgrpo.edge.cli", "serve",
        "--model", str(model_dir), "--variant", variant,
        "--host", host, "--port", "0", "--name", name,
        "--threads", "1",
        # the fault proxy models the device queue; the service must not shed load itself
        "--max-queue", "256", "--timeout", "600",
    ]  # fmt: skip


@dataclass
class EmulatedFleet:
    """The processes and proxies of one emulate run; :meth:`stop` is idempotent."""

    log_dir: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    edges: list[EdgeProcess] = field(default_factory=list)
    proxies: ProxyHost | None = None
    _stopped: bool = False

    def launch(
        self, client: ClientEntry, model_dir: Path, variant: str, host: str, extra: tuple[str, ...] = ()
    ) -> EdgeProcess:
        """Start one edge process (``extra``: its behaviour/privacy flags)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{client.id}.log"
        env = dict(os.environ)
        env["FEDGRPO_EDGE_TOKEN"] = self.token
        env["PYTHONUNBUFFERED"] = "1"
        env["OMP_NUM_THREADS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with log_path.open("wb") as fh:
            proc = subprocess.Popen(
                [*edge_command(model_dir, variant, host, client.id), *extra],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(ROOT),
                start_new_session=True,  # own process group: Ctrl-C is ours to handle
                preexec_fn=_die_with_parent,
            )
        edge = EdgeProcess(client, proc, log_path)
        self.edges.append(edge)
        return edge

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until every process logged its port and answers /v2/health/ready."""
        deadline = time.monotonic() + timeout_s
        waiting = list(self.edges)
        while waiting:
            for edge in list(waiting):
                code = edge.proc.poll()
                if code is not None:
                    raise EmulateError(
                        f"emulated client {edge.client.id!r}: edge process exited with code {code} "
                        f"during startup; log: {edge.log_path}\n{edge.log_tail()}"
                    )
                if edge.port is None:
                    with contextlib.suppress(OSError):
                        m = _PORT_RE.search(edge.log_path.read_text(errors="replace"))
                        if m:
                            edge.port = int(m.group(1))
                if edge.port is not None and _ready(edge.url):
                    waiting.remove(edge)
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(f"{e.client.id!r} (log: {e.log_path})" for e in waiting)
                tails = "\n".join(f"  {e.client.id}:\n{e.log_tail()}" for e in waiting)
                raise EmulateError(
                    f"emulated client(s) {names} not ready after {timeout_s:g} s "
                    f"(emulate.startup_timeout_s)\n{tails}"
                )
            time.sleep(0.1)

    def dead(self) -> list[EdgeProcess]:
        return [e for e in self.edges if e.proc.poll() is not None]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proxies is not None:
            self.proxies.stop()
        for edge in self.edges:
            if edge.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(edge.proc.pid, signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE_S
        for edge in self.edges:
            try:
                edge.proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(edge.proc.pid, signal.SIGKILL)
                edge.proc.wait(5)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


def _die_with_parent() -> None:
    """In the child (Linux): get SIGTERM when the server process dies, even by SIGKILL, so
    no edge process outlives a crashed server (atexit and the closer cover normal exits)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class EmulateGatherer(AsyncGatherer):
    """:class:`AsyncGatherer` that also knows its fleet (warns once per dead edge process)."""

    fleet: EmulatedFleet

    def gather(self, request: GatherRequest, rng: np.random.Generator) -> GatherResult:
        warned: set[str] = getattr(self, "_warned_dead", set())
        for edge in self.fleet.dead():
            if edge.client.id not in warned:
                warned.add(edge.client.id)
                log.warning(
                    "emulated client %r: edge process exited (code %s); its requests fail from "
                    "now on. Log: %s",
                    edge.client.id,
                    edge.proc.returncode,
                    edge.log_path,
                )
        self._warned_dead = warned
        result = super().gather(request, rng)
        result.stats["extra"]["edge_processes_alive"] = len(self.fleet.edges) - len(
            self.fleet.dead()
        )
        return result


def fault_model(ctx: Context, client: ClientEntry) -> FaultModel:
    """The client's device behaviour exactly as sim mode models it (profile + dropout)."""
    s = ctx.scenario
    decode = client_rewards(s)[client.index].decode_tokens
    return FaultModel.from_client_spec(
        sim_client(s, client), s.emulate.time_scale, decode_tokens=decode
    )


def start_fleet(ctx: Context, log_dir: Path | None = None) -> EmulatedFleet:
    """Start processes + proxies for every client; on any failure stop them and raise."""
    s = ctx.scenario
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fleet = EmulatedFleet(
        log_dir or models_dir() / "emulate-logs" / f"{s.name}-{stamp}-{os.getpid()}"
    )
    atexit.register(fleet.stop)
    try:
        dirs = [export_client_model(ctx, c) for c in ctx.clients]
        for c, d in zip(ctx.clients, dirs):
            budget = ("--max-new-tokens", str(device_token_budget(s)))
            fleet.launch(c, d, c.group.export, s.emulate.host, (*edge_flags(s, c), *budget))
        log.info("started %d edge processes; logs in %s", len(fleet.edges), fleet.log_dir)
        fleet.wait_ready(s.emulate.startup_timeout_s)
        fleet.proxies = ProxyHost()
        for edge in fleet.edges:
            assert edge.port is not None
            proxy = FaultProxy(
                edge.client.index,
                edge.client.id,
                f"http://{_connect_host(s.emulate.host)}:{edge.port}",
                fault_model(ctx, edge.client),
                s.seed,
            )
            fleet.proxies.add(proxy, "127.0.0.1")
    except BaseException:
        fleet.stop()
        raise
    return fleet


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host


def make_emulate_gatherer(ctx: Context) -> tuple[Any, Any]:
    """(gatherer, closer) for ``mode: emulate``; each client's requests carry its own
    group's reward settings, and over-selection is the scenario's count (see mapping)."""
    s = ctx.scenario
    fleet = start_fleet(ctx)
    try:
        assert fleet.proxies is not None
        endpoints = [
            ClientEndpoint(p.client_id, p.url, p.name, fleet.token) for p in fleet.proxies.proxies
        ]
        gatherer = EmulateGatherer(
            endpoints,
            scale_policy(round_policy(s), s.emulate.time_scale),
            ClientRewardTransport(HttpTransport(limit_per_host=16), client_rewards(s)),
            dispatch_mode=s.selection.dispatch,
            labels=[c.group.profile for c in ctx.clients],
            reserve_per_question=reserve_per_question(s),
            time_scale=s.emulate.time_scale,
            competence_timeout_s=max(120.0, s.emulate.startup_timeout_s),
            extra_stats=fleet.proxies.counters,
            max_staleness=s.round_policy.max_staleness if s.round_policy.async_ else None,
        )
        gatherer.fleet = fleet
    except BaseException:
        fleet.stop()
        raise

    def closer() -> None:
        try:
            gatherer.close()
        finally:
            fleet.stop()

    return gatherer, closer
