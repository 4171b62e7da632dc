"""`fedgrpo graph show`: look inside the confidence graph of a scenario.

For a sample of held-out questions: their L nearest auxiliary exemplars (question, domain,
cosine similarity), every client's competence score on them and the chosen experts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedgrpo.scenarios.schema import Scenario


def show_graph(
    s: Scenario, questions: int = 5, neighbours: int = 5, save: Path | None = None
) -> str:
    """The text ``fedgrpo graph show`` prints (selector forced to ``confidence_graph``);
    ``save`` also writes the competence matrix there as JSON."""
    from fedgrpo.experiments.context import build_context, load_scorers, resolve_model, scorer_fn
    from fedgrpo.experiments.enrolment import refresh_competence
    from fedgrpo.experiments.runner import _selector_and_embedder
    from fedgrpo.selection.graph import competence_scores, cosine_neighbours, top_m
    from fedgrpo.server.gathering.inprocess import DirectGatherer
    from fedgrpo.server.zoo.loading import load_causal_lm

    s = s.model_copy(
        update={"selection": s.selection.model_copy(update={"selector": "confidence_graph"})}
    )
    ctx = build_context(s)
    model, tokenizer = load_causal_lm(resolve_model(ctx, s.server.model))
    scorers = load_scorers(ctx)
    gatherer = DirectGatherer([scorer_fn(sc, c.id) for sc, c in zip(scorers, ctx.clients)])
    _selector, embed, competence, aux = _selector_and_embedder(ctx, model, tokenizer, gatherer)
    refresh_competence(ctx, gatherer, competence, aux, 0, 0)
    rng = np.random.default_rng(s.seed)
    test = ctx.suite.test()
    sample = [test[i] for i in rng.choice(len(test), size=min(questions, len(test)), replace=False)]
    aux_emb = embed([a.question for a in aux])
    q_emb = embed([q.question for q in sample])
    near = cosine_neighbours(q_emb, aux_emb, s.selection.L)
    scores = competence_scores(competence.values, near, s.selection.prior)
    chosen = top_m(scores, s.selection.M, rng)
    lines = [
        f"confidence graph of {s.name!r}: {len(ctx.clients)} clients x {len(aux)} auxiliary exemplars"
    ]
    lines.append(_routing_summary(s, ctx, test, embed, aux_emb, competence))
    lines += _competence_lines(ctx, competence)
    for k, item in enumerate(sample):
        sims = aux_emb[near[k]] @ q_emb[k]
        lines.append(f"\nQ: {item.question!r} (true domain {item.domain})")
        for j in range(min(neighbours, near.shape[1])):
            a = aux[near[k][j]]
            lines.append(f"   neighbour {a.question!r:14s} {a.domain:5s} cos={sims[j]:.3f}")
        lines += _expert_lines(ctx, scores[k], chosen[k])
    if save is not None:
        save.write_text(competence.to_json())
        lines.append(f"\ncompetence matrix saved to {save}")
    return "\n".join(lines)


def _competence_lines(ctx: Any, competence: Any) -> list[str]:
    """One line per client: the domains it holds and its mean known competence."""
    lines = ["client competence (mean correctness on the auxiliary set):"]
    for c, row in zip(ctx.clients, competence.values):
        known = row[~np.isnan(row)]
        mean = f"{known.mean():.2f}" if known.size else "unknown"
        lines.append(f"  {c.id:14s} holds {sorted(ctx.client_domains[c.index])}  competence {mean}")
    return lines


def _expert_lines(ctx: Any, scores: Any, chosen: Any) -> list[str]:
    """One question's clients ranked by competence score, then the experts chosen for it."""
    ranked = np.argsort(-scores)
    return [
        "   scores: " + ", ".join(f"{ctx.clients[c].id}={scores[c]:.2f}" for c in ranked),
        "   experts: " + ", ".join(ctx.clients[int(c)].id for c in chosen),
    ]


def _routing_summary(
    s: Scenario, ctx: Any, test: list[Any], embed: Any, aux_emb: Any, competence: Any
) -> str:
    """How often the graph routes a held-out question to a client that holds its domain."""
    from fedgrpo.selection.graph import competence_scores, cosine_neighbours, top_m

    near = cosine_neighbours(embed([q.question for q in test]), aux_emb, s.selection.L)
    scores = competence_scores(competence.values, near, s.selection.prior)
    chosen = top_m(scores, s.selection.M, np.random.default_rng(s.seed))
    holds = [
        [item.domain in ctx.client_domains[int(c)] for c in row] for item, row in zip(test, chosen)
    ]
    first = float(np.mean([h[0] for h in holds]))
    any_m = float(np.mean([any(h) for h in holds]))
    return (
        f"routing over all {len(test)} test questions: the top expert holds the question's "
        f"domain for {first:.1%}; one of the top {s.selection.M} does for {any_m:.1%}"
    )


def cmd_graph_show(args: Any) -> int:
    """``fedgrpo graph show SCENARIO``: print :func:`show_graph` of the loaded scenario."""
    from fedgrpo.scenarios.loader import load_scenario

    s = load_scenario(args.file, tuple(args.set or ()))
    print(show_graph(s, args.questions, args.neighbours, Path(args.save) if args.save else None))
    return 0
