"""What the device service's handlers share: the scorer, the limits, the metrics, the thread
pool and the admission control around it (``max_concurrency`` running + ``max_queue``
waiting, a timeout per request, a slot held until its thread really finishes), and the error
type every handler raises to answer ``{"error": message}``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiohttp import web

from fedgrpo.edge.metrics import Metrics
from fedgrpo.edge.service_config import RewardModel, ServiceConfig

__all__ = ["STATE", "ServiceError", "ServiceState"]

T = TypeVar("T")


class ServiceError(Exception):
    """An error answered as ``{"error": message}`` with ``status`` (and extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ServiceState:
    """Everything the handlers share: scorer, limits, metrics, pool and admission counter."""

    def __init__(self, scorer: RewardModel, config: ServiceConfig) -> None:
        self.scorer = scorer
        self.config = config
        self.metrics = Metrics()
        self.executor = ThreadPoolExecutor(
            max_workers=config.max_concurrency, thread_name_prefix="edge-score"
        )
        self.slots = asyncio.Semaphore(config.max_concurrency)
        self.pending = 0
        self.draining = False

    def _set_pending(self, delta: int) -> None:
        self.pending += delta
        self.metrics.in_flight = self.pending

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` in the pool under admission control and the request timeout."""
        if self.pending >= self.config.max_concurrency + self.config.max_queue:
            self.metrics.reject("overloaded")
            raise ServiceError(
                503,
                f"device busy: {self.pending} requests admitted, limit "
                f"{self.config.max_concurrency} running + {self.config.max_queue} queued",
                {"Retry-After": str(self.config.retry_after_seconds)},
            )
        self._set_pending(+1)
        try:
            return await asyncio.wait_for(self._run_admitted(work), self.config.timeout)
        except asyncio.TimeoutError:
            self.metrics.reject("timeout")
            raise ServiceError(
                504, f"scoring did not finish within {self.config.timeout:g} s"
            ) from None

    async def _run_admitted(self, work: Callable[[], T]) -> T:
        handed_off = False
        try:
            await self.slots.acquire()
            try:
                future = asyncio.get_running_loop().run_in_executor(self.executor, work)
            except BaseException:
                self.slots.release()
                raise
            handed_off = True
            future.add_done_callback(self._finished)
            return await asyncio.shield(future)
        finally:
            if not handed_off:
                self._set_pending(-1)

    def _finished(self, future: asyncio.Future[Any] | ThreadFuture[Any]) -> None:
        # The slot is held until the thread is really done, even after a 504.
        self.slots.release()
        self._set_pending(-1)
        if not future.cancelled():
            future.exception()  # mark retrieved: a timed-out job's error is only logged here


STATE: web.AppKey[ServiceState] = web.AppKey("edge_state", ServiceState)
