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
    ) -> list[float]: ...

    def competence(
        self, questions: Sequence[str], reference_answers: Sequence[str]
    ) -> list[float]: ...


@dataclass(frozen=True)
class ServiceConfig:
    """``max_concurrency`` requests score at once; ``max_queue`` more may wait for a slot;
    anything beyond is refused at once with 503 + Retry-After (a phone should shed load,
    not build an unbounded backlog the server has long given up on). ``timeout`` bounds a
    request's total time (waiting + scoring) and answers 504 when exceeded."""

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
    parameters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.timeout <= 0 or self.max_body_bytes < 1024:
            raise ValueError("timeout must be > 0 and max_body_bytes >= 1024")
        if self.token is not None and not self.token:
            raise ValueError("an empty token would accept anyone; pass None to disable auth")
