"""Partitioning training data over clients."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fedgrpo.errors import PartitionError
from fedgrpo.server.tasks import build_suite
from fedgrpo.server.tasks.partition import (
    dirichlet_proportions,
    partition_by_domain,
    partition_dirichlet,
    partition_iid,
)

SUITE = build_suite(["add", "sub", "mul", "mod", "sort"], seed=0, train_per_domain=200)


def test_by_domain_gives_each_client_only_its_domains_and_shares_fairly() -> None:
    parts = partition_by_domain(SUITE.train(), [["add"], ["sub", "mul"], ["add"]], random.Random(0))
    assert {i.domain for i in parts[0]} == {"add"}
    assert {i.domain for i in parts[1]} == {"sub", "mul"}
    assert abs(len(parts[0]) - len(parts[2])) <= 1
    assert not {i.question for i in parts[0]} & {i.question for i in parts[2]}


def test_by_domain_errors_name_the_client() -> None:
    with pytest.raises(PartitionError, match="client 1 has no domains"):
        partition_by_domain(SUITE.train(), [["add"], []], random.Random(0))
    with pytest.raises(PartitionError, match="client 0 asks for domain 'rev'"):
        partition_by_domain(SUITE.train(), [["rev"]], random.Random(0))


def test_iid_covers_everything_once_and_mixes_domains() -> None:
    parts = partition_iid(SUITE.train(), 4, random.Random(0))
    flat = [i for p in parts for i in p]
    assert sorted(i.question for i in flat) == sorted(i.question for i in SUITE.train())
    assert all(len({i.domain for i in p}) == 5 for p in parts)
    with pytest.raises(PartitionError, match="cannot give each of"):
        partition_iid(SUITE.train()[:3], 4, random.Random(0))


def test_dirichlet_proportions_sum_to_one_and_concentrate_with_small_beta() -> None:
    rng = random.Random(0)
    rows = dirichlet_proportions(10, 200, 0.05, rng)
    assert all(abs(sum(r) - 1.0) < 1e-9 for r in rows)
    peaked = sum(max(r) for r in rows) / len(rows)
    flat = sum(max(r) for r in dirichlet_proportions(10, 200, 100.0, random.Random(0))) / 200
    assert peaked > 0.6 and flat < 0.2  # beta -> 0: one client per class; large: uniform 1/10
    # Dirichlet(beta) is symmetric: every client's expected share is 1/K.
    rows = dirichlet_proportions(5, 4000, 1.0, random.Random(2))
    for k in range(5):
        assert abs(sum(r[k] for r in rows) / len(rows) - 0.2) < 0.02


def test_dirichlet_partition_is_a_partition_and_every_client_non_empty() -> None:
    parts = partition_dirichlet(SUITE.train(), 6, 0.3, random.Random(1))
    flat = [i.question for p in parts for i in p]
    assert sorted(flat) == sorted(i.question for i in SUITE.train())
    assert all(parts)
    # non-IID: the average client is dominated by its top domain
    dominance = [Counter(i.domain for i in p).most_common(1)[0][1] / len(p) for p in parts]
    assert sum(dominance) / len(dominance) > 0.4


def test_dirichlet_gives_a_clear_error_when_clients_cannot_all_get_data() -> None:
    with pytest.raises(PartitionError, match=r"raise beta, lower num_clients"):
        partition_dirichlet(SUITE.train()[:5], 50, 0.01, random.Random(0), min_items_per_client=1, max_attempts=3)
    with pytest.raises(PartitionError, match="positive finite"):
        partition_dirichlet(SUITE.train(), 3, 0.0, random.Random(0))
