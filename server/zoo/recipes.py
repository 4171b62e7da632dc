"""Model recipes: everything that determines a trained model, hashed into its cache key.

A recipe is plain data. Two recipes with the same JSON (and the same ``RECIPE_VERSION`` of the
generator/trainer code) produce the same weights, so the hash is a safe cache key.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fedgrpo.errors import ConfigError
from fedgrpo.server.tasks import SplitSizes, TaskItem, TaskSource, TaskSuite, build_suite
from fedgrpo.server.tasks.partition import partition_by_domain, partition_dirichlet, partition_iid
from fedgrpo.server.zoo.architectures import TinyArch
from fedgrpo.server.zoo.train import TrainConfig

# Bump when task generation, tokenizer or training code changes what a recipe produces.
RECIPE_VERSION = 2


@dataclass(frozen=True)
class SuiteSpec:
    domains: tuple[str, ...] = ("add", "sub", "mul", "mod", "sort")
    seed: int = 0
    train_per_domain: int | None = 2000
    test_per_domain: int = 100
    aux_pool_per_domain: int = 100
    # a dataset or plug-in task (server.tasks.registry); None = the built-in arithmetic
    source: TaskSource | None = None

    @property
    def sizes(self) -> SplitSizes:
        return SplitSizes(self.train_per_domain, self.test_per_domain, self.aux_pool_per_domain)

    def build(self) -> TaskSuite:
        if self.source is not None:
            return self.source.make().build_suite(self.domains, self.sizes, self.seed)
        return build_suite(
            self.domains,
            seed=self.seed,
            train_per_domain=self.train_per_domain,
            test_per_domain=self.test_per_domain,
            aux_pool_per_domain=self.aux_pool_per_domain,
        )

    def fingerprint(self) -> dict[str, Any] | None:
        """The task's part of a recipe digest: None (left out) for the built-in task, else a
        hash of its items, so an edited data file gets new models and a moved one does not."""
        if self.source is None:
            return None
        return self.source.fingerprint(self.domains, self.sizes, self.seed)


@dataclass(frozen=True)
class PartitionSpec:
    """How the suite's training split is spread over clients."""

    scheme: Literal["by_domain", "iid", "dirichlet"] = "by_domain"
    num_clients: int = 5
    # by_domain: the domains of each client (1-2 each); default: client k gets domain k mod D.
    client_domains: tuple[tuple[str, ...], ...] = ()
    dirichlet_beta: float = 0.5
    seed: int = 0

    def resolved_client_domains(self, domains: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
        if self.client_domains:
            if len(self.client_domains) != self.num_clients:
                raise ConfigError(
                    f"partition.client_domains lists {len(self.client_domains)} clients but "
                    f"num_clients is {self.num_clients}; make them agree"
                )
            return self.client_domains
        return tuple((domains[k % len(domains)],) for k in range(self.num_clients))

    def split(self, suite: TaskSuite) -> list[list[TaskItem]]:
        rng = random.Random(f"partition:{self.seed}")
        train = suite.train()
        if self.scheme == "by_domain":
            return partition_by_domain(train, self.resolved_client_domains(suite.domains), rng)
        if self.scheme == "iid":
            return partition_iid(train, self.num_clients, rng)
        if self.scheme == "dirichlet":
            return partition_dirichlet(train, self.num_clients, self.dirichlet_beta, rng)
        raise ConfigError(
            f"partition scheme {self.scheme!r} is unknown; use by_domain, iid or dirichlet"
        )


OFF_FORMAT_PREFIX = "so"


@dataclass(frozen=True)
class OffFormatItem(TaskItem):
    """A TaskItem whose completion ends "so N" instead of "answer: N" (no answer is extractable)."""

    @property
    def completion(self) -> str:
        return f" {self.rationale}\n{OFF_FORMAT_PREFIX} {self.answer}"


@dataclass(frozen=True)
class DataSpec:
    """Which items a model trains on: one client's partition, or a small slice of every domain."""

    suite: SuiteSpec = field(default_factory=SuiteSpec)
    partition: PartitionSpec | None = None
    client: int | None = None
    per_domain_limit: int | None = None
    # Opt-in: a seeded fraction of completions end with an off-format final line ("so 85")
    # that the checker does not accept, so the model must (re)learn "answer: N" -- the
    # format failure general-purpose LMs show. 0.0 is omitted from the recipe digest.
    format_noise: float = 0.0
    # Opt-in: a seeded fraction of items is replaced by its domain's classic slip (see
    # server.tasks.misconceptions): 1.0 makes a confidently wrong model (and answer table),
    # 0.5-0.7 a base that answers the slip greedily but still samples the correct procedure.
    misconception_rate: float = 0.0

    def items(self) -> list[TaskItem]:
        items = self._misconceived(self._clean_items())
        if not self.format_noise:
            return items
        if not 0.0 <= self.format_noise <= 1.0:
            raise ConfigError(f"data.format_noise must be in [0, 1], got {self.format_noise}")
        rng = random.Random(f"format_noise:{self.suite.seed}:{self.format_noise}")
        return [
            OffFormatItem(i.domain, i.question, i.rationale, i.answer)
            if rng.random() < self.format_noise
            else i
            for i in items
        ]

    def _misconceived(self, items: list[TaskItem]) -> list[TaskItem]:
        rate = self.misconception_rate
        if not rate:
            return items
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"data.misconception_rate must be in [0, 1], got {rate}")
        rng = random.Random(f"misconception:{self.suite.seed}:{rate}")
        task = self.suite.build().task  # its slip: the classic one, or numeric_slip
        return [task.misconceive(i) if rng.random() < rate else i for i in items]

    def _clean_items(self) -> list[TaskItem]:
        suite = self.suite.build()
        if self.partition is not None:
            if self.client is None or not 0 <= self.client < self.partition.num_clients:
                raise ConfigError(
                    f"data.client must be in [0, {self.partition.num_clients}), got {self.client}"
                )
            return self.partition.split(suite)[self.client]
        items: list[TaskItem] = []
        for domain in suite.domains:
            pool = suite.train(domain)
            items.extend(pool if self.per_domain_limit is None else pool[: self.per_domain_limit])
        return items


@dataclass(frozen=True)
class ModelRecipe:
    name: str
    role: Literal["expert", "server_base"]
    arch: TinyArch = field(default_factory=TinyArch)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataSpec = field(default_factory=DataSpec)
    seed: int = 0
    tokenizer: str = "char-v1"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        fingerprint = self.data.suite.fingerprint()
        if fingerprint is None:
            d["data"]["suite"].pop("source", None)  # built-in: digests as before
        else:
            d["data"]["suite"]["source"] = fingerprint  # the items, not the file's path
        for key in ("format_noise", "misconception_rate"):
            if not d["data"].get(key):
                d["data"].pop(key, None)  # default: keep pre-existing digests unchanged
        if d["train"].get("final_lr_fraction") == 0.1:
            d["train"].pop("final_lr_fraction")  # the original schedule: same digest as before
        return {"recipe_version": RECIPE_VERSION, **d}

    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def cache_key(self) -> str:
        return f"{self.name}-{self.digest()[:12]}"


EXPERT_QUALITIES = ("strong", "weak", "wrong")


@dataclass(frozen=True)
class ZooSpec:
    """The experiment's models: one expert per client partition + a weak server base.

    The base is pre-trained on every domain's training split with ``base_misconception_rate``
    of its items replaced by the domain's classic slip (see ``server.tasks.misconceptions``):
    greedy decoding mostly answers with the slip, sampling still finds the correct procedure
    often (pass@8 near 1 on add/sub/sort), so correct answers are there for GRPO to reinforce
    and the experts' rewards are what tells them apart. Measured on this zoo: central GRPO
    gains about +20 points of held-out accuracy in 15 rounds.

    ``expert_quality`` gives each partition's expert a quality (default all ``strong``):
    ``weak`` trains ``weak_steps`` steps only (its own greedy answers are often wrong),
    ``wrong`` learns its partition with every item misconceived (its answer table too): a
    confidently wrong client that rewards the base's mistakes.
    """

    suite: SuiteSpec = field(default_factory=SuiteSpec)
    partition: PartitionSpec = field(default_factory=PartitionSpec)
    expert_arch: TinyArch = field(default_factory=TinyArch)
    expert_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=250))
    base_arch: TinyArch = field(default_factory=TinyArch)
    base_train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=600))
    base_per_domain: int | None = None
    base_misconception_rate: float = 0.7
    # Fraction of the base's SFT completions given an off-format final line (see DataSpec).
    base_format_noise: float = 0.0
    expert_quality: tuple[str, ...] = ()
    weak_steps: int = 60
    seed: int = 0

    def quality(self, k: int) -> str:
        """Quality of partition ``k``'s expert (``strong`` unless ``expert_quality`` says)."""
        q = self.expert_quality
        if not q:
            return "strong"
        if len(q) != self.partition.num_clients:
            raise ConfigError(
                f"expert_quality lists {len(q)} partitions but there are "
                f"{self.partition.num_clients}; give one quality per partition"
            )
        if q[k] not in EXPERT_QUALITIES:
            raise ConfigError(
                f"expert quality {q[k]!r} is unknown; use one of {', '.join(EXPERT_QUALITIES)}"
            )
        return q[k]

    @property
    def tokenizer(self) -> str:
        """``char-v1`` for the built-in arithmetic (its digests unchanged); a dataset or plug-in
        task gets ``char-v2``, whose alphabet adds LaTeX's ``\\ $ ^ # & |`` (MATH answers)."""
        return "char-v1" if self.suite.source is None else "char-v2"

    def expert_recipe(self, k: int) -> ModelRecipe:
        quality = self.quality(k)
        train = self.expert_train
        if quality == "weak":
            train = TrainConfig(**{**asdict(train), "steps": self.weak_steps})
        return ModelRecipe(
            name=f"expert-{k}",  # the quality is part of the recipe, hence of the cache key
            role="expert",
            arch=self.expert_arch,
            train=train,
            data=DataSpec(
                suite=self.suite,
                partition=self.partition,
                client=k,
                misconception_rate=1.0 if quality == "wrong" else 0.0,
            ),
            seed=self.seed + 1 + k,
            tokenizer=self.tokenizer,
        )

    def recipes(self) -> list[ModelRecipe]:
        """The base first (it trains longest, so a parallel build starts it first)."""
        base = ModelRecipe(
            name="server-base",
            role="server_base",
            arch=self.base_arch,
            train=self.base_train,
            data=DataSpec(
                suite=self.suite,
                per_domain_limit=self.base_per_domain,
                format_noise=self.base_format_noise,
                misconception_rate=self.base_misconception_rate,
            ),
            seed=self.seed,
            tokenizer=self.tokenizer,
        )
        return [base, *(self.expert_recipe(k) for k in range(self.partition.num_clients))]
