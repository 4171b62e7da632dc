"""Partitioning training data over K clients: by domain, IID, Dirichlet(beta) non-IID.

Every function takes an explicit ``random.Random`` and returns one list per client. An
empty client is an error naming the client and the fix, never a silent empty model.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

from fedgrpo.errors import PartitionError
from fedgrpo.server.tasks.domains import TaskItem


def _check_non_empty(parts: list[list[TaskItem]], hint: str) -> list[list[TaskItem]]:
    for k, part in enumerate(parts):
        if not part:
            raise PartitionError(f"client {k} received no training items; {hint}")
    return parts


def partition_by_domain(
    items: Sequence[TaskItem],
    client_domains: Sequence[Sequence[str]],
    rng: random.Random,
) -> list[list[TaskItem]]:
    """Each client gets the items of its domains; a domain shared by several clients is split
    evenly between them (shuffled), like the official code's subject split."""
    by_domain: dict[str, list[TaskItem]] = defaultdict(list)
    for item in items:
        by_domain[item.domain].append(item)
    holders: dict[str, list[int]] = defaultdict(list)
    for k, domains in enumerate(client_domains):
        if not domains:
            raise PartitionError(f"client {k} has no domains; give every client 1-2 domains")
        for name in domains:
            if name not in by_domain:
                known = ", ".join(sorted(by_domain))
                raise PartitionError(
                    f"client {k} asks for domain {name!r} which has no training items; "
                    f"available: {known}"
                )
            holders[name].append(k)
    parts: list[list[TaskItem]] = [[] for _ in client_domains]
    for name, clients in holders.items():
        pool = list(by_domain[name])
        rng.shuffle(pool)
        for j, item in enumerate(pool):
            parts[clients[j % len(clients)]].append(item)
    for part in parts:
        rng.shuffle(part)
    return _check_non_empty(parts, "give it a domain that has training items")


def partition_iid(
    items: Sequence[TaskItem], num_clients: int, rng: random.Random
) -> list[list[TaskItem]]:
    """Shuffle and deal the items round-robin: every client sees every domain."""
    if num_clients <= 0:
        raise PartitionError(f"num_clients must be positive, got {num_clients}")
    if len(items) < num_clients:
        raise PartitionError(
            f"{len(items)} items cannot give each of {num_clients} clients at least one; "
            "use fewer clients or more training items"
        )
    pool = list(items)
    rng.shuffle(pool)
    return [pool[k::num_clients] for k in range(num_clients)]


def dirichlet_proportions(
    num_clients: int, num_classes: int, beta: float, rng: random.Random
) -> list[list[float]]:
    """``num_classes`` rows, each a Dirichlet(beta) split of that class over the clients."""
    if beta <= 0 or not math.isfinite(beta):
        raise PartitionError(f"dirichlet beta must be a positive finite number, got {beta}")
    rows = []
    for _ in range(num_classes):
        draws = [rng.gammavariate(beta, 1.0) for _ in range(num_clients)]
        total = sum(draws)
        if total == 0.0:  # all draws underflowed (tiny beta): give the class to one client
            draws = [0.0] * num_clients
            draws[rng.randrange(num_clients)] = 1.0
            total = 1.0
        rows.append([d / total for d in draws])
    return rows


def partition_dirichlet(
    items: Sequence[TaskItem],
    num_clients: int,
    beta: float,
    rng: random.Random,
    min_items_per_client: int = 1,
    max_attempts: int = 100,
) -> list[list[TaskItem]]:
    """Non-IID split: domain d's items go to clients in Dirichlet(beta) proportions.

    Small beta -> each client dominated by few domains; large beta -> close to IID. Redraws
    (up to ``max_attempts``) until every client has ``min_items_per_client`` items, as is
    standard (Hsu et al., 2019), then fails with a clear error.
    """
    if num_clients <= 0:
        raise PartitionError(f"num_clients must be positive, got {num_clients}")
    by_domain: dict[str, list[TaskItem]] = defaultdict(list)
    for item in items:
        by_domain[item.domain].append(item)
    names = sorted(by_domain)
    for _ in range(max_attempts):
        parts: list[list[TaskItem]] = [[] for _ in range(num_clients)]
        proportions = dirichlet_proportions(num_clients, len(names), beta, rng)
        for name, row in zip(names, proportions):
            pool = list(by_domain[name])
            rng.shuffle(pool)
            cuts = _cut_points(len(pool), row)
            for k in range(num_clients):
                parts[k].extend(pool[cuts[k] : cuts[k + 1]])
        if all(len(p) >= min_items_per_client for p in parts):
            for part in parts:
                rng.shuffle(part)
            return parts
    raise PartitionError(
        f"Dirichlet(beta={beta}) left some of {num_clients} clients with fewer than "
        f"{min_items_per_client} items after {max_attempts} draws; raise beta, lower "
        "num_clients or add training items"
    )


def _cut_points(n: int, proportions: Sequence[float]) -> list[int]:
    cumulative = 0.0
    cuts = [0]
    for p in proportions[:-1]:
        cumulative += p
        cuts.append(min(n, round(cumulative * n)))
    cuts.append(n)
    return cuts
