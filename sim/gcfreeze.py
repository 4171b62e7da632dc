"""Keeping Python's cyclic GC out of the simulator's event loop (a measured ~10% at 10k
clients); used by :class:`fedgrpo.sim.engine.Simulator` around each run."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["GC_GEN0", "GcFreezer"]

#: young-generation GC threshold while the event loop runs (see :meth:`GcFreezer.frozen`)
GC_GEN0 = 50_000


class GcFreezer:
    """Freezes long-lived objects while a run is active (:meth:`frozen`), and again at each
    round start (:meth:`refreeze`)."""

    def __init__(self) -> None:
        self.active = False

    def refreeze(self) -> None:
        """Move everything alive now out of the collector's sight (if a run is active)."""
        if self.active:
            gc.freeze()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Keep the cyclic GC from rescanning long-lived objects on each of its full
        collections while the event loop allocates. ``gc.freeze()`` on entry and again at each
        round start moves everything alive then (client tables and random streams, the
        config, earlier rounds' records, the caller's objects) out of the collector's sight;
        ``gc.unfreeze()`` on exit hands it all back, so nothing is leaked (a cycle that became
        garbage meanwhile is collected after the run). A full collection then scans only the
        current round's objects. Skipped when the GC is off or someone else has frozen
        objects (their freeze is theirs to undo).

        The young-generation threshold is also raised to :data:`GC_GEN0` meanwhile (restored
        on exit): each request allocates ~10 tracked objects (its job, queue entries, values),
        so the default 700 runs a young collection every ~70 requests, which costs ~10% of the
        loop at 10k clients; the loop makes almost no cyclic garbage to find."""
        if not gc.isenabled() or gc.get_freeze_count() or self.active:
            yield
            return
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], GC_GEN0), *threshold[1:])
        gc.freeze()
        self.active = True
        try:
            yield
        finally:
            self.active = False
            gc.unfreeze()
            gc.set_threshold(*threshold)
