"""Turn a validated scenario into live objects: task suite, zoo models, server model, clients.

Kept apart from the round loop so each piece is testable and the runner stays short.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedgrpo.edge.protocol import CompetenceRequest, RewardResponse, ScoreRequest
from fedgrpo.errors import ConfigError
from fedgrpo.experiments.models_dir import current as models_dir_now
from fedgrpo.scenarios.mapping import ClientRewards, client_rewards, task_source
from fedgrpo.scenarios.schema import ZOO_PREFIX, ClientEntry, Scenario
from fedgrpo.server.tasks import TaskSuite
from fedgrpo.server.zoo.recipes import PartitionSpec, SuiteSpec, ZooSpec

if TYPE_CHECKING:
    from fedgrpo.edge.scorer import EdgeScorer
    from fedgrpo.server.gathering.transport import ClientEndpoint, Transport

SUITE_SEED = 0  # data is fixed across run seeds, so a seed sweep reuses the same zoo
POSITION_STEP = 32  # a dataset zoo's context length is rounded up to a multiple of this


def models_dir() -> Path:
    return models_dir_now()


def zoo_spec(s: Scenario) -> ZooSpec:
    """The zoo the scenario's ``zoo:`` models come from (same recipe -> same cache entry)."""
    part = s.tasks.partition
    source = task_source(s)
    suite = SuiteSpec(
        domains=tuple(s.tasks.domains),
        seed=SUITE_SEED if source.kind == "builtin" else s.tasks.source.split_seed,
        train_per_domain=s.tasks.train_per_domain,
        test_per_domain=s.tasks.test_per_domain,
        aux_pool_per_domain=s.tasks.aux_pool_per_domain,
        source=None if source.kind == "builtin" else source,
    )
    spec = ZooSpec(
        suite=suite,
        partition=PartitionSpec(
            scheme=part.scheme,
            num_clients=s.num_partitions,
            client_domains=tuple(tuple(d) for d in part.client_domains or ()),
            dirichlet_beta=part.dirichlet_beta,
        ),
        expert_quality=s.partition_qualities(),
    )
    return spec if suite.source is None else sized_for_data(spec, s.server.grpo.max_new_tokens)


def sized_for_data(spec: ZooSpec, max_new_tokens: int) -> ZooSpec:
    """A dataset zoo's context length: the longest prompt + completion (or prompt + the
    rollout's new tokens), in characters (the zoo's tokenizer is one token per character)."""
    items = spec.suite.build()
    every = items.train() + items.test() + items.aux_pool()
    need = 2 + max(len(i.prompt) + max(len(i.completion), max_new_tokens) for i in every)
    positions = max(spec.expert_arch.max_positions, -(-need // POSITION_STEP) * POSITION_STEP)
    return replace(
        spec,
        expert_arch=replace(spec.expert_arch, max_positions=positions),
        base_arch=replace(spec.base_arch, max_positions=positions),
    )


def client_domains(spec: ZooSpec) -> list[set[str]]:
    """Domains each partition's expert really knows (>= 1/(2D) of its data): the oracle
    selector's ground truth. A confidently wrong expert knows none (its data is misconceived)."""
    suite = spec.suite.build()
    parts = spec.partition.split(suite)
    threshold = 1.0 / (2 * len(suite.domains))
    out = []
    for k, items in enumerate(parts):
        counts = Counter(i.domain for i in items)
        known = {d for d, c in counts.items() if c / len(items) >= threshold}
        out.append(set() if spec.quality(k) == "wrong" else known)
    return out


@dataclass
class Context:
    scenario: Scenario
    suite: TaskSuite
    spec: ZooSpec
    zoo_paths: dict[str, Path]
    clients: list[ClientEntry]
    client_domains: list[set[str]]


def build_context(s: Scenario, need_models: bool = True) -> Context:
    spec = zoo_spec(s)
    zoo_paths: dict[str, Path] = {}
    if need_models:
        from fedgrpo.experiments.prebuild import uses_zoo

        if uses_zoo(s):
            from fedgrpo.server.zoo.commands import build_default_zoo

            zoo_paths = {n: r.path for n, r in build_default_zoo(models_dir(), spec).items()}
    clients = s.client_list()
    per_partition = client_domains(spec)
    held = [per_partition[c.index % len(per_partition)] for c in clients]
    return Context(s, spec.suite.build(), spec, zoo_paths, clients, held)


def resolve_model(ctx: Context, model: str) -> str:
    if model.startswith(ZOO_PREFIX):
        name = model[len(ZOO_PREFIX) :]
        if name not in ctx.zoo_paths:
            raise ConfigError(
                f"model {model!r} is not in the zoo; known: "
                + ", ".join(ZOO_PREFIX + n for n in ctx.zoo_paths)
            )
        return str(ctx.zoo_paths[name])
    return model


def export_client_model(ctx: Context, client: ClientEntry) -> Path:
    """ONNX export of a client's model, cached next to the zoo (one per source + variant)."""
    from fedgrpo.edge.export import export_model

    source = resolve_model(ctx, client.model)
    key = Path(source).name if Path(source).exists() else source.replace("/", "_").replace(":", "_")
    out = models_dir() / "onnx" / key
    variant = client.group.export
    manifest = out / "manifest.json"
    wanted = () if variant == "fp32" else (variant,)
    if manifest.is_file():
        import json

        have = json.loads(manifest.read_text()).get("variants", {})
        if variant == "fp32" or variant in have:
            return out
    export_model(source, out, quantize=wanted, overwrite=True)
    return out


def device_token_budget(s: Scenario) -> int:
    """A device's own greedy answer (agreement, competence) gets at least the server's
    completion budget, so a long dataset rationale is not cut before its answer line."""
    from fedgrpo.edge.scorer import ScorerConfig

    return max(ScorerConfig.max_new_tokens, s.server.grpo.max_new_tokens)


def load_scorers(ctx: Context, threads: int = 1) -> list[EdgeScorer]:
    from fedgrpo.edge.scorer import EdgeScorer, ScorerConfig

    budget = device_token_budget(ctx.scenario)
    scorers = []
    for client in ctx.clients:
        directory = export_client_model(ctx, client)
        config = ScorerConfig(variant=client.group.export, threads=threads, max_new_tokens=budget)
        scorers.append(EdgeScorer.load(directory, config))
    return scorers


def scorer_fn(scorer: EdgeScorer, name: str) -> Any:
    """An in-process client: request -> response, exactly what the edge service computes."""

    def call(request: ScoreRequest | CompetenceRequest) -> RewardResponse:
        if isinstance(request, CompetenceRequest):
            values = scorer.competence(request.questions, request.reference_answers)
            return RewardResponse(request.request_id, name, tuple(values), output_name="correct")
        values = scorer.score(
            request.questions,
            request.completions,
            request.reward_mode,
            request.format_weight,
            request.partial_credit,
        )
        return RewardResponse(request.request_id, name, tuple(values))

    return call


def with_client_rewards(request: ScoreRequest, rewards: ClientRewards) -> ScoreRequest:
    """``request`` carrying the client's own group's reward mode, format weight and partial credit."""
    return replace(
        request,
        reward_mode=rewards.reward_mode,
        format_weight=rewards.format_weight,
        partial_credit=rewards.partial_credit,
    )


def per_client_reward_fn(
    s: Scenario, score_fns: Sequence[Callable[[ScoreRequest], RewardResponse]]
) -> Callable[[int, ScoreRequest], tuple[float, ...]]:
    """``(client, request) -> values`` where each client scores with its own group's settings."""
    rewards = client_rewards(s)

    def call(client: int, request: ScoreRequest) -> tuple[float, ...]:
        return score_fns[client](with_client_rewards(request, rewards[client])).values

    return call


class ClientRewardTransport:
    """A transport whose score requests carry each client's own group's reward settings
    (emulate and live); competence requests and byte counting pass through unchanged."""

    def __init__(self, inner: Transport, rewards: Sequence[ClientRewards]) -> None:
        self.inner = inner
        self.rewards = list(rewards)

    @property
    def traffic(self) -> Any:
        return getattr(self.inner, "traffic", None)

    async def score(
        self, client: ClientEndpoint, request: ScoreRequest | CompetenceRequest, timeout_s: float
    ) -> RewardResponse:
        if isinstance(request, ScoreRequest):
            request = with_client_rewards(request, self.rewards[client.client_id])
        return await self.inner.score(client, request, timeout_s)

    async def aclose(self) -> None:
        await self.inner.aclose()


def auxiliary_set(ctx: Context) -> list[Any]:
    return ctx.suite.auxiliary_set(
        ctx.scenario.selection.aux_size, random.Random(f"aux:{ctx.scenario.seed}")
    )
