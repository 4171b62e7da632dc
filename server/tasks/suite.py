"""Deterministic train / test / auxiliary splits over a set of domains."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedgrpo.errors import ConfigError
from fedgrpo.server.tasks.domains import TaskItem, get_domain

if TYPE_CHECKING:
    from fedgrpo.server.tasks.task import Task


def _arithmetic() -> Task:
    from fedgrpo.server.tasks.task import ARITHMETIC

    return ARITHMETIC


@dataclass(frozen=True)
class DomainSplits:
    train: tuple[TaskItem, ...]
    test: tuple[TaskItem, ...]
    aux_pool: tuple[TaskItem, ...]


@dataclass(frozen=True)
class TaskSuite:
    """Per-domain splits. ``train`` is clients' private data and the server's unlabelled
    question stream, ``test`` is held out for evaluation, ``aux_pool`` is the labelled pool the
    server's auxiliary set is drawn from. The three never share a question. ``task`` is the
    plug-in the items come from: its checker, format check and slip (``server.tasks.task``)."""

    domains: tuple[str, ...]
    seed: int
    splits: dict[str, DomainSplits] = field(repr=False)
    task: Task = field(default_factory=_arithmetic, repr=False, compare=False)

    def train(self, domain: str | None = None) -> list[TaskItem]:
        return self._collect("train", domain)

    def test(self, domain: str | None = None) -> list[TaskItem]:
        return self._collect("test", domain)

    def aux_pool(self, domain: str | None = None) -> list[TaskItem]:
        return self._collect("aux_pool", domain)

    def _collect(self, split: str, domain: str | None) -> list[TaskItem]:
        names = self.domains if domain is None else (domain,)
        return [item for name in names for item in getattr(self.splits[name], split)]

    def auxiliary_set(self, size: int, rng: random.Random) -> list[TaskItem]:
        """The server's labelled auxiliary set: ``size`` items spread evenly over domains."""
        if size <= 0:
            raise ConfigError(f"auxiliary set size must be positive, got {size}")
        per_domain, extra = divmod(size, len(self.domains))
        chosen: list[TaskItem] = []
        for k, name in enumerate(self.domains):
            pool = list(self.splits[name].aux_pool)
            want = per_domain + (1 if k < extra else 0)
            if want > len(pool):
                raise ConfigError(
                    f"auxiliary set of {size} needs {want} items of {name!r} but its pool has "
                    f"{len(pool)}; raise aux_pool_per_domain or lower the auxiliary size"
                )
            chosen.extend(rng.sample(pool, want))
        return chosen


def build_suite(
    domains: list[str] | tuple[str, ...],
    seed: int = 0,
    train_per_domain: int | None = 2000,
    test_per_domain: int = 200,
    aux_pool_per_domain: int = 100,
) -> TaskSuite:
    """Build disjoint splits for ``domains``; the same arguments always give the same suite.

    ``train_per_domain`` is a cap: small domains (``mul`` and ``mod`` have 720 problems) put
    whatever test and auxiliary items leave into train. ``None`` means no cap.

    Each domain's problem space is shuffled with its own generator (seeded from ``seed`` and
    the domain name) so adding a domain never changes another domain's items.
    """
    if not domains:
        raise ConfigError("domains must name at least one domain")
    if len(set(domains)) != len(domains):
        raise ConfigError(f"domains contains duplicates: {list(domains)}")
    for name, value in (
        ("train_per_domain", 0 if train_per_domain is None else train_per_domain),
        ("test_per_domain", test_per_domain),
        ("aux_pool_per_domain", aux_pool_per_domain),
    ):
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    splits: dict[str, DomainSplits] = {}
    for name in domains:
        domain = get_domain(name)
        held_out = test_per_domain + aux_pool_per_domain
        if held_out >= domain.space_size:
            raise ConfigError(
                f"domain {name!r} has only {domain.space_size} distinct problems but test "
                f"({test_per_domain}) + aux ({aux_pool_per_domain}) take {held_out}, leaving "
                "nothing to train on; lower the split sizes"
            )
        room = domain.space_size - held_out
        n_train = room if train_per_domain is None else min(train_per_domain, room)
        rng = random.Random(f"{seed}:{name}")
        # Held-out items are drawn first so changing the train cap never moves them.
        indices = rng.sample(range(domain.space_size), held_out + n_train)
        items = [domain.make(i) for i in indices]
        splits[name] = DomainSplits(
            test=tuple(items[:test_per_domain]),
            aux_pool=tuple(items[test_per_domain:held_out]),
            train=tuple(items[held_out:]),
        )
    return TaskSuite(domains=tuple(domains), seed=seed, splits=splits)
