"""Experts scored in-process, through the one round semantics.

:class:`DirectGatherer` calls each expert's scoring function (``request -> RewardResponse``)
over an :class:`~fedgrpo.server.gathering.transport.InProcessTransport` and drives the round
with the same plan, :class:`~fedgrpo.rounds.RoundState` and asyncio driver as emulate and
live (:class:`~fedgrpo.server.gathering.asynchronous.AsyncGatherer`): dispatch, retries,
what counts and the per-round record are theirs; byte counts are the real JSON's. Used for
probing competence (``fedgrpo graph show``) and by tests that need no clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedgrpo.rounds import RoundPolicy
from fedgrpo.server.gathering.asynchronous import AsyncGatherer
from fedgrpo.server.gathering.base import ScoreFn
from fedgrpo.server.gathering.transport import ClientEndpoint, InProcessTransport

__all__ = ["DirectGatherer"]

#: in-process scorers answer in milliseconds; the deadline only bounds a hung scorer
IN_PROCESS_POLICY = RoundPolicy(deadline_s=600.0)


class DirectGatherer(AsyncGatherer):
    """Client ``k`` is ``clients[k]``; every expert of a question is a primary (no reserve)."""

    def __init__(
        self,
        clients: Sequence[ScoreFn],
        dispatch: str = "split",
        reward_mode: str = "auto",
        format_weight: float = 0.0,
        client_labels: Sequence[str] | None = None,
        policy: RoundPolicy = IN_PROCESS_POLICY,
    ) -> None:
        endpoints = [
            ClientEndpoint(k, "http://in-process", f"client-{k}") for k in range(len(clients))
        ]
        super().__init__(
            endpoints,
            policy,
            transport=InProcessTransport(dict(enumerate(clients))),
            dispatch_mode=dispatch,
            reward_mode=reward_mode,
            format_weight=format_weight,
            labels=client_labels,
        )
