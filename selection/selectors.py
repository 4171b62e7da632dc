"""Selectors: for each question, which clients (row indices) act as its experts."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import numpy as np

from fedgrpo.errors import ConfigError
from fedgrpo.selection.competence import CompetenceMatrix
from fedgrpo.selection.graph import competence_scores, cosine_neighbours, l2_normalise, top_m

SELECTORS = ("confidence_graph", "random", "oracle", "all")


class Selector(Protocol):
    def select(
        self,
        question_embeddings: np.ndarray | None,
        question_domains: Sequence[str | None] | None,
        rng: np.random.Generator,
        available: Collection[int] | None = None,
    ) -> list[list[int]]:
        """One list of expert client indices per question (offline clients excluded)."""
        ...


def _num_questions(emb: np.ndarray | None, domains: Sequence[str | None] | None) -> int:
    if emb is not None:
        return int(np.atleast_2d(emb).shape[0])
    if domains is not None:
        return len(domains)
    raise ConfigError("pass question_embeddings or question_domains (both are None)")


def _available(num_clients: int, available: Collection[int] | None) -> np.ndarray:
    """Sorted available client indices, checked against 0..K-1."""
    if available is None:
        return np.arange(num_clients)
    idx = np.array(sorted(set(available)), dtype=np.int64)
    if idx.size and (idx[0] < 0 or idx[-1] >= num_clients):
        raise ConfigError(f"available clients {idx.tolist()}; allowed 0..{num_clients - 1}")
    return idx


def _check_m(M: int) -> None:
    if M <= 0:
        raise ConfigError(f"M={M} experts per question; allowed M >= 1")


class ConfidenceGraphSelector:
    """Top-M clients by mean correctness on the question's L nearest auxiliary exemplars."""

    def __init__(
        self,
        aux_embeddings: np.ndarray,
        competence: CompetenceMatrix | np.ndarray,
        L: int = 20,
        M: int = 2,
        prior: float = 0.5,
    ) -> None:
        _check_m(M)
        self.aux = l2_normalise(aux_embeddings)
        self.competence = competence
        self.L, self.M, self.prior = L, M, prior
        if self._values().shape[1] != self.aux.shape[0]:
            raise ConfigError(
                f"competence has {self._values().shape[1]} exemplars, "
                f"aux_embeddings {self.aux.shape[0]}; they must match"
            )

    def _values(self) -> np.ndarray:
        c = self.competence
        return c.values if isinstance(c, CompetenceMatrix) else np.asarray(c, dtype=np.float64)

    def select(
        self,
        question_embeddings: np.ndarray | None,
        question_domains: Sequence[str | None] | None,
        rng: np.random.Generator,
        available: Collection[int] | None = None,
    ) -> list[list[int]]:
        if question_embeddings is None:
            raise ConfigError("confidence_graph needs question_embeddings")
        values = self._values()
        mask = np.zeros(values.shape[0], dtype=bool)
        mask[_available(values.shape[0], available)] = True
        neighbours = cosine_neighbours(question_embeddings, self.aux, self.L)
        scores = competence_scores(values, neighbours, self.prior)
        return top_m(scores, self.M, rng, mask).tolist()


class RandomSelector:
    """M distinct clients uniformly at random per question (what the official code does).

    Drawn by rejection, ``M + 4`` ids per question in one call and the first M distinct kept
    (a permutation if that falls short), so a round costs O(Q·M), not O(Q·K): the simulator
    uses this selector with 10k+ clients."""

    def __init__(self, num_clients: int, M: int = 2) -> None:
        _check_m(M)
        self.num_clients, self.M = num_clients, M

    def select(
        self,
        question_embeddings: np.ndarray | None,
        question_domains: Sequence[str | None] | None,
        rng: np.random.Generator,
        available: Collection[int] | None = None,
    ) -> list[list[int]]:
        q = _num_questions(question_embeddings, question_domains)
        out: list[list[int]] = self.select_array(q, rng, available).tolist()
        return out

    def select_array(
        self, questions: int, rng: np.random.Generator, available: Collection[int] | None = None
    ) -> np.ndarray:
        """:meth:`select` as a ``[questions, M]`` array (the same draws, no per-question
        Python loop: the vectorised simulator asks 25k questions a round)."""
        avail = _available(self.num_clients, available)
        n, m = int(avail.size), min(self.M, int(avail.size))
        rows = rng.integers(0, max(n, 1), size=(questions, m + 4))
        out = rows[:, :m].copy()  # the first m ids, where they are distinct (nearly always)
        dup = np.zeros(questions, dtype=bool)
        for j in range(1, m):
            dup |= (out[:, :j] == out[:, j : j + 1]).any(axis=1)
        bad = np.nonzero(dup)[0]
        if len(bad):
            # first occurrence of each id in its row, in order
            sub = rows[bad]
            keep = np.ones(sub.shape, dtype=bool)
            for j in range(1, sub.shape[1]):
                keep[:, j] = ~(sub[:, :j] == sub[:, j : j + 1]).any(axis=1)
            rank = np.cumsum(keep, axis=1) - 1
            take = keep & (rank < m)
            r_idx, _ = np.nonzero(take)
            out[bad[r_idx], rank[take]] = sub[take]
            for r in bad[take.sum(axis=1) < m].tolist():  # too few distinct: rare
                out[r] = rng.permutation(n)[:m]
        return out if available is None else avail[out]


class CompetenceSelector:
    """Top-M clients by *known* competence on the question's domain, ties broken by one
    shuffle per call: the simulator's ``top`` selector for timing studies, where each
    client's competence is a given number rather than something the server estimates."""

    def __init__(self, competence_on: Callable[[str], Sequence[float]], M: int = 2) -> None:
        _check_m(M)
        self.competence_on, self.M = competence_on, M

    def select(
        self,
        question_embeddings: np.ndarray | None,
        question_domains: Sequence[str | None] | None,
        rng: np.random.Generator,
        available: Collection[int] | None = None,
    ) -> list[list[int]]:
        if question_domains is None:
            raise ConfigError("the competence selector needs question_domains")
        ranking: dict[str | None, list[int]] = {}
        noise: np.ndarray | None = None
        for d in dict.fromkeys(question_domains):
            comp = np.asarray(self.competence_on(str(d)), dtype=np.float64)
            if noise is None:
                noise = rng.random(comp.size)
            if available is not None:
                comp = np.where(np.isin(np.arange(comp.size), list(available)), comp, -np.inf)
            order = np.lexsort((noise, -comp))
            ranking[d] = [int(k) for k in order if np.isfinite(comp[k])][: self.M]
        return [list(ranking[d]) for d in question_domains]


class OracleSelector:
    """Clients whose domains hold the question's true domain (random among them), random fill."""

    def __init__(self, client_domains: Sequence[Collection[str]], M: int = 2) -> None:
        _check_m(M)
        self.client_domains = [set(d) for d in client_domains]
        self.M = M

    def select(
        self,
        question_embeddings: np.ndarray | None,
        question_domains: Sequence[str | None] | None,
        rng: np.random.Generator,
        available: Collection[int] | None = None,
    ) -> list[list[int]]:
        if question_domains is None:
            raise ConfigError("oracle selector needs question_domains (the true domains)")
        avail = _available(len(self.client_domains), available)
        out = []
        for domain in question_domains:
            shuffled = rng.permutation(avail)
            experts = [int(k) for k in shuffled if domain in self.client_domains[k]]
            others = [int(k) for k in shuffled if domain not in self.client_domains[k]]
            out.append((experts + others)[: self.M])
        return out


class AllSelector:
    """Every available client is an expert for every question."""

    def __init__(self, num_clients: int) -> None:
        self.num_clients = num_clients

    def select(
        self,
        question_embeddings: np.ndarray | None,
        question_domains: Sequence[str | None] | None,
        rng: np.random.Generator,
        available: Collection[int] | None = None,
    ) -> list[list[int]]:
        avail = _available(self.num_clients, available).tolist()
        q = _num_questions(question_embeddings, question_domains)
        return [list(avail) for _ in range(q)]


def make_selector(
    name: str,
    *,
    num_clients: int | None = None,
    M: int = 2,
    L: int = 20,
    prior: float = 0.5,
    aux_embeddings: np.ndarray | None = None,
    competence: CompetenceMatrix | np.ndarray | None = None,
    client_domains: Sequence[Collection[str]] | None = None,
) -> Selector:
    """Build a selector by name; names: confidence_graph, random, oracle, all."""
    if name == "confidence_graph":
        if aux_embeddings is None or competence is None:
            raise ConfigError("selector 'confidence_graph' needs aux_embeddings and competence")
        return ConfidenceGraphSelector(aux_embeddings, competence, L=L, M=M, prior=prior)
    if name == "oracle":
        if client_domains is None:
            raise ConfigError("selector 'oracle' needs client_domains")
        return OracleSelector(client_domains, M=M)
    if name in ("random", "all"):
        if num_clients is None or num_clients <= 0:
            raise ConfigError(f"selector {name!r} needs num_clients >= 1; got {num_clients}")
        return RandomSelector(num_clients, M=M) if name == "random" else AllSelector(num_clients)
    raise ConfigError(f"selector {name!r} is unknown; allowed: {SELECTORS}")
