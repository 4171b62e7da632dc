"""What the server asks a client outside the timed rounds: its competence bits on the
auxiliary set (the confidence graph's input), and -- for ``reward_combine: trust`` -- a
reward probe built from the auxiliary items it answered right (the root of trust,
:mod:`fedgrpo.server.grpo.trust`)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from fedgrpo.experiments.context import Context

__all__ = ["probe_requests", "refresh_competence"]


def refresh_competence(
    ctx: Context,
    gatherer: Any,
    competence: Any,
    aux: list[Any],
    round_index: int,
    every_n: int,
    aggregator: Any = None,
) -> list[str]:
    """Ask clients that were never measured (or not for ``every_n`` rounds) for competence
    bits on the auxiliary set. A client that fails stays unknown: the selector gives it the
    prior, so it keeps being explored. With a trust ``aggregator`` the clients that answered
    are then probed. Returns the ids that answered."""
    ids = competence.needs_refresh(round_index, every_n)
    index = {c.id: c.index for c in ctx.clients}
    if not ids:
        return []
    bits = gatherer.competence(
        [index[i] for i in ids], [a.question for a in aux], [a.answer for a in aux]
    )
    answered = []
    for k, values in bits.items():
        if values is not None:
            competence.update(ctx.clients[k].id, list(range(len(aux))), values, round=round_index)
            answered.append(ctx.clients[k].id)
    probe = getattr(gatherer, "probe", None)
    if aggregator is not None and aggregator.method == "trust" and probe is not None:
        rows = {index[i]: competence.values[competence.index(i)] for i in answered}
        _probe(ctx, probe, aggregator, aux, rows, round_index)
    return answered


def probe_requests(
    aux: list[Any], bits: np.ndarray, items: int, rng: random.Random
) -> tuple[list[str], list[str]]:
    """``(questions, completions)`` of one client's probe: up to ``items`` auxiliary items it
    answered right (``bits`` = its competence row), each as (reference solution, slip), in an
    order drawn from ``rng``; empty when it answered none right."""
    from fedgrpo.server.prompting import exemplar_reply
    from fedgrpo.server.tasks.task import numeric_slip

    right = [j for j, b in enumerate(bits) if b == 1.0]
    picked = rng.sample(right, min(items, len(right)))
    questions: list[str] = []
    completions: list[str] = []
    for j in picked:
        item = aux[j]
        slip = numeric_slip(item)
        if slip.answer == item.answer:  # nothing to slip to: no pair
            continue
        questions += [item.question, item.question]
        completions += [" " + exemplar_reply(item), " " + exemplar_reply(slip)]
    return questions, completions


def _probe(
    ctx: Context, probe: Any, aggregator: Any, aux: list[Any], rows: dict[int, Any], r: int
) -> None:
    """Probe each client and hand the scores to the aggregator (``grpo/trust.py``)."""
    from fedgrpo.server.grpo.trust import probe_agreement

    s = ctx.scenario
    requests = {}
    for k, bits in rows.items():
        rng = random.Random(f"probe:{s.seed}:{r}:{k}")
        qs, cs = probe_requests(aux, bits, s.server.trust.probe_items, rng)
        if qs:
            requests[k] = (qs, cs)
    if not requests:
        return
    answers = probe(requests, r)
    aggregator.set_probe(
        {k: probe_agreement(v) for k, v in answers.items() if v is not None and len(v)}
    )
