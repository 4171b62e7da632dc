"""Expert selection on numpy arrays: the confidence graph and the baselines it is compared to.

Clients are row indices 0..K-1 of the competence matrix; ``CompetenceMatrix.client_ids``
maps them to names. Every random choice takes an explicit ``numpy.random.Generator``.
"""

from fedgrpo.selection.competence import CompetenceMatrix
from fedgrpo.selection.graph import competence_scores, cosine_neighbours, l2_normalise, top_m
from fedgrpo.selection.selectors import (
    SELECTORS,
    AllSelector,
    CompetenceSelector,
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
    "CompetenceSelector",
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
