"""Sim-mode reward gathering (placeholder wiring until the simulator lands: in-process
scorers, every expert answers, zero virtual time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scenarios.context import Context, load_scorers, scorer_fn
from scenarios.schema import Scenario


def make_sim_gatherer(ctx: Context) -> tuple[Any, Any]:
    from server.gatherers import DirectGatherer

    scorers = load_scorers(ctx)
    s = ctx.scenario
    return (
        DirectGatherer(
            [scorer_fn(sc, c.id) for sc, c in zip(scorers, ctx.clients)],
            dispatch=s.selection.dispatch,
            client_labels=[c.group.profile for c in ctx.clients],
        ),
        None,
    )


def run_timing_only(s: Scenario, run_dir: Path, resume: bool) -> dict[str, Any]:
    raise NotImplementedError("timing-only simulation is wired in by the simulator")
