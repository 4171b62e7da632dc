"""The one per-round gathering record: what every gatherer returns for a round.

Simulated (``experiments/runtimes/sim.py``), emulated and live (``server/gathering/
asynchronous.py``), in-process (``server/gathering/inprocess.py``) and central
(``server/gathering/base.py``) rounds all build their stats with :func:`round_stats`, so the
keys and their meanings are the same in every mode and are documented once, here:

* ``asked`` … ``ignored``: :meth:`fedgrpo.rounds.RoundOutcome.counts` (assignments: a retry
  re-sends the same assignment and counts under ``retries``, not ``asked``);
* ``offline`` / ``crashed``: attempts lost to a device that was offline / crashed;
* ``closed_by``: ``complete``, ``round_quorum`` or ``deadline`` (``None``: no round ran);
* ``duration_s``: the round's length in device-profile seconds (virtual time in sim, wall
  time / ``time_scale`` in emulate, wall time in live);
* ``wasted_device_s``: device work whose result was not used;
* ``bytes_sent`` / ``bytes_received``: what actually moved (a request that never reached a
  device is not counted);
* ``participation``: answered assignments per client label (device profile);
* ``extra``: mode-specific numbers (``virtual_now_s``, ``wall_duration_s``, ``injected_*``,
  ``stale_used``, …), flattened into the metrics record by :func:`flat`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

__all__ = ["COUNT_KEYS", "RoundStats", "flat", "round_stats"]

COUNT_KEYS = ("asked", "answered", "failed", "cancelled", "late", "retried", "retries", "ignored")


class RoundStats(TypedDict):
    asked: int
    answered: int
    failed: int
    cancelled: int
    late: int
    retried: int
    retries: int
    ignored: int
    offline: int
    crashed: int
    closed_by: str | None
    duration_s: float
    wasted_device_s: float
    bytes_sent: int
    bytes_received: int
    participation: dict[str, int]
    extra: dict[str, Any]


def round_stats(
    counts: Mapping[str, int] | None = None,
    *,
    offline: int = 0,
    crashed: int = 0,
    closed_by: str | None = None,
    duration_s: float = 0.0,
    wasted_device_s: float = 0.0,
    bytes_sent: int = 0,
    bytes_received: int = 0,
    participation: Mapping[str, int] | None = None,
    **extra: Any,
) -> RoundStats:
    """A round's record; ``counts`` is :meth:`RoundOutcome.counts` (zeros when no round ran)."""
    c = {k: int((counts or {}).get(k, 0)) for k in COUNT_KEYS}
    return RoundStats(
        asked=c["asked"],
        answered=c["answered"],
        failed=c["failed"],
        cancelled=c["cancelled"],
        late=c["late"],
        retried=c["retried"],
        retries=c["retries"],
        ignored=c["ignored"],
        offline=int(offline),
        crashed=int(crashed),
        closed_by=closed_by,
        duration_s=float(duration_s),
        wasted_device_s=float(wasted_device_s),
        bytes_sent=int(bytes_sent),
        bytes_received=int(bytes_received),
        participation=dict(participation or {}),
        extra=dict(extra),
    )


def flat(stats: RoundStats) -> dict[str, Any]:
    """The record as metrics-file fields: ``extra``'s keys beside the common ones."""
    out: dict[str, Any] = {k: v for k, v in stats.items() if k != "extra"}
    out.update(stats["extra"])
    return out
