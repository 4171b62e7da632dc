"""Expert selection on numpy arrays: the confidence graph and the baselines it is compared to.

Clients are row indices 0..K-1 of the competence matrix; ``CompetenceMatrix.client_ids``
maps them to names. Every random choice takes an explicit ``numpy.random.Generator``.
"""

from fedgrpo.server.selection.competence import CompetenceMatrix
from fedgrpo.server.selection.graph import competence_scores, cosine_neighbours, l2_normalise, top_m
from fedgrpo.server.selection.selectors import (
    SELECTORS,
    AllSelector,
    ConfidenceGraphSelector,
    OracleSelector,
    RandomSelector,
    Selector,
    make_selector,
)

__all__ = [
    "SELECTORS",
    "AllSelector",
    "CompetenceMatrix",
    "ConfidenceGraphSelector",
    "OracleSelector",
    "RandomSelector",
    "Selector",
    "competence_scores",
    "cosine_neighbours",
    "l2_normalise",
    "make_selector",
    "top_m",
]
