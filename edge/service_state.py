"""What the device service's handlers share: the scorer, the limits, the metrics, the thread
pool and the admission control around it (``max_concurrency`` running + ``max_queue``
waiting, a timeout per request, a slot held until its thread really finishes), and the error
type every handler raises to answer ``{"error": message}``."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import Future as ThreadFuture
from typing import Any, TypeVar

from aiohttp import web

from fedgrpo.edge.metrics import Metrics
from fedgrpo.edge.service_config import RewardModel, ServiceConfig

__all__ = ["STATE", "DaemonPool", "ServiceError", "ServiceState"]

T = TypeVar("T")


class ServiceError(Exception):
    """An error answered as ``{"error": message}`` with ``status`` (and extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class DaemonPool(Executor):
    """A fixed pool of *daemon* worker threads. ``ThreadPoolExecutor``'s threads are joined
    at interpreter exit, so one stuck scorer call would hold the process long after a
    bounded shutdown; these are not (the process exits when the service is done)."""

    def __init__(self, workers: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[ThreadFuture[Any], Callable[[], Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> ThreadFuture[T]:
        if self._closed:
            raise RuntimeError("the scoring pool is shut down")
        future: ThreadFuture[T] = ThreadFuture()
        self._jobs.put((future, lambda: fn(*args, **kwargs)))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the waiting request, never lost
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            with contextlib.suppress(queue.Empty):
                while (job := self._jobs.get_nowait()) is not None:
                    job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class ServiceState:
    """Everything the handlers share: scorer, limits, metrics, pool and admission counter."""

    def __init__(self, scorer: RewardModel, config: ServiceConfig) -> None:
        self.scorer = scorer
        self.config = config
        self.metrics = Metrics()
        self.executor = DaemonPool(config.max_concurrency, "edge-score")
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
