"""Limits and identity of an edge service, and the scorer interface it serves.

Kept apart from :mod:`edge.service` so tests (and the emulator) can build a config or a
stand-in scorer without pulling in aiohttp's app machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fedgrpo.edge.protocol import DEFAULT_MAX_BATCH, DEFAULT_MAX_STRING_CHARS


class RewardModel(Protocol):
    """What the service needs from a scorer (``EdgeScorer`` or a test stand-in)."""

    name: str

    def score(
        self,
        questions: Sequence[str],
        completions: Sequence[str],
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        partial_credit: float = 0.0,
    ) -> list[float]: ...

    def competence(
        self, questions: Sequence[str], reference_answers: Sequence[str]
    ) -> list[float]: ...


@dataclass(frozen=True)
class ServiceConfig:
    """``max_concurrency`` requests score at once; ``max_queue`` more may wait for a slot;
    anything beyond is refused at once with 503 + Retry-After (a phone should shed load,
    not build an unbounded backlog the server has long given up on). ``timeout`` bounds a
    request's total time (waiting + scoring) and answers 504 when exceeded.

    Slow or silent clients are bounded too (each holds a file descriptor on a small device):
    ``keepalive_timeout`` closes a connection that sends nothing (after connecting or after
    its last response), ``header_timeout`` closes one whose request line and headers are not
    complete that long after their first byte, and ``body_timeout`` answers 408 when the
    body has not fully arrived in time. ``shutdown_timeout`` bounds the whole shutdown after
    SIGTERM: readiness answers 503 for ``drain_grace`` seconds (so a balancer stops sending)
    while the listener is still open, then in-flight requests get the rest of the budget."""

    model_name: str = "edge-model"
    model_version: str = "1"
    token: str | None = None
    max_concurrency: int = 1
    max_queue: int = 4
    timeout: float = 30.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = DEFAULT_MAX_BATCH
    max_string_chars: int = DEFAULT_MAX_STRING_CHARS
    retry_after_seconds: int = 1
    shutdown_timeout: float = 30.0
    keepalive_timeout: float = 15.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    drain_grace: float = 1.0
    parameters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.timeout <= 0 or self.max_body_bytes < 1024:
            raise ValueError("timeout must be > 0 and max_body_bytes >= 1024")
        for name in ("keepalive_timeout", "header_timeout", "body_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if not 0 <= self.drain_grace < self.shutdown_timeout:
            raise ValueError(
                f"drain_grace must be in [0, shutdown_timeout={self.shutdown_timeout:g}), "
                f"got {self.drain_grace!r}"
            )
        if self.token is not None and not self.token:
            raise ValueError("an empty token would accept anyone; pass None to disable auth")
