"""The typed scenario schema (pydantic v2): one file describes one whole experiment.

Every model forbids unknown keys; defaults are the quickstart's values. Field-level checks
(types, ranges, enumerations, known domains and device profiles, model sources) live here;
checks that relate several fields (live URLs, quorum vs group size, M vs clients, partition vs
zoo experts) live in :func:`cross_field_errors`, which the loader runs after validation so
every problem is reported with its own field path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from fedgrpo.errors import ConfigError

ZOO_PREFIX = "zoo:"
BUILTIN_PREFIX = "builtin:"
ZOO_SERVER_MODELS = ("server-base",)
# `zoo:expert` = the zoo expert trained on this client's partition; `zoo:expert-K` = expert K.
ZOO_EXPERT = "expert"
_ZOO_EXPERT_K = re.compile(r"^expert-(\d+)$")
NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._=+,-]*$"


class ScenarioError(ConfigError):
    """A scenario file cannot be read or is invalid; ``str()`` is one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- registries


@functools.lru_cache(maxsize=1)
def known_profiles() -> tuple[str, ...]:
    """Device profile names of the simulator's registry (``fedgrpo.sim.devices.PROFILES``)."""
    from fedgrpo.sim.devices import PROFILES

    return tuple(sorted(PROFILES))


def known_domains() -> tuple[str, ...]:
    from fedgrpo.server.tasks import DOMAINS

    return tuple(DOMAINS)


def known_builtins() -> tuple[str, ...]:
    from fedgrpo.edge.builtin_models import BUILTINS

    return tuple(BUILTINS)


def _err(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    # Our own errors are prefixed so the formatter prints their message as-is.
    return PydanticCustomError(f"fedgrpo_{kind}", message, ctx)


def _check_model_source(value: str, role: Literal["server", "client"]) -> str:
    if value.startswith(ZOO_PREFIX):
        name = value[len(ZOO_PREFIX) :]
        allowed = (
            [f"{ZOO_PREFIX}{n}" for n in ZOO_SERVER_MODELS]
            if role == "server"
            else [f"{ZOO_PREFIX}{ZOO_EXPERT}", f"{ZOO_PREFIX}expert-K", f"{ZOO_PREFIX}server-base"]
        )
        ok = name in ZOO_SERVER_MODELS or (
            role == "client" and (name == ZOO_EXPERT or _ZOO_EXPERT_K.match(name) is not None)
        )
        if not ok:
            raise _err(
                "model",
                "'{value}' is not a zoo model; allowed: {allowed}, builtin:NAME or a local path",
                value=value,
                allowed=", ".join(allowed),
            )
    elif value.startswith(BUILTIN_PREFIX):
        name = value[len(BUILTIN_PREFIX) :]
        builtins = known_builtins()
        if name not in builtins:
            raise _err(
                "model",
                "'{value}' is not a built-in model; known: {known}",
                value=value,
                known=", ".join(BUILTIN_PREFIX + b for b in builtins),
            )
    elif not value.strip():
        raise _err("model", "model source is empty; give zoo:..., builtin:NAME or a path")
    return value


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]


class PartitionConfig(_Model):
    """How the training split is spread over clients (each client = one partition)."""

    scheme: Literal["by_domain", "iid", "dirichlet"] = "by_domain"
    dirichlet_beta: Annotated[float, Field(gt=0.0)] = 0.5
    # by_domain: domains of each client; default client k gets domain k mod D.
    client_domains: list[list[str]] | None = None
    # number of partitions; None = the total client count
    num_clients: PosInt | None = None


class TasksConfig(_Model):
    domains: list[str] = Field(default_factory=lambda: ["add", "sub", "mul", "mod", "sort"])
    train_per_domain: PosInt = 2000
    test_per_domain: PosInt = 100
    aux_pool_per_domain: PosInt = 100
    partition: PartitionConfig = Field(default_factory=PartitionConfig)

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, value: list[str]) -> list[str]:
        known = known_domains()
        if not value:
            raise _err("domains", "no domains given; known: {known}", known=", ".join(known))
        for name in value:
            if name not in known:
                raise _err(
                    "domain",
                    "'{value}' is not a known domain; known: {known}",
                    value=name,
                    known=", ".join(known),
                )
        dupes = sorted({d for d in value if value.count(d) > 1})
        if dupes:
            raise _err("domain", "domains repeat {dupes}; list each once", dupes=dupes)
        return value


class GRPOConfig(_Model):
    group_size: Annotated[int, Field(ge=2)] = 8
    questions_per_round: PosInt = 8
    temperature: Annotated[float, Field(gt=0.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    max_new_tokens: PosInt = 40
    lr: Annotated[float, Field(gt=0.0)] = 1e-4
    eps_low: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    eps_high: Annotated[float, Field(ge=0.0)] = 0.3
    beta: Annotated[float, Field(ge=0.0)] = 0.0
    num_iterations: PosInt = 1
    loss_type: Literal["grpo", "bnpo", "dapo", "dr_grpo"] = "grpo"
    scale: Literal["group", "batch", "none"] = "group"
    reward_combine: Literal["mean", "median", "trimmed_mean"] = "mean"
    trim: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.2
    grad_clip: Annotated[float, Field(gt=0.0)] | None = 1.0
    optimizer: Literal["adamw", "sgd"] = "adamw"
    adam_beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    adam_beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.999
    sgd_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    # linear warmup of the learning rate over the first rounds (0 = none)
    warmup_rounds: NonNegInt = 0
    # cosine decay to lr_final_fraction·lr at this round (0 = constant lr; null = the run's
    # last round, so the last updates are small)
    lr_decay_rounds: NonNegInt | None = None
    lr_final_fraction: Prob = 0.0
    # weight on negative advantages: 1 = GRPO, 0 = learn only from better-than-average answers
    negative_advantage_scale: Prob = 1.0
    # negative control: shuffle rewards within each group (keeps their spread, destroys the
    # signal); a run with this on must not learn
    shuffle_rewards: bool = False


class ServerConfig(_Model):
    model: str = "zoo:server-base"
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    baseline: Literal["fedgrpo", "central_grpo", "zero_shot"] = "fedgrpo"
    # torch intra-op threads for rollout, update and evaluation. 1 suits the tiny zoo models
    # (a thread pool only adds overhead at that size, and collapses on a busy machine);
    # raise it for bigger models such as SmolLM2. null = torch's default (all cores).
    threads: PosInt | None = 1

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return _check_model_source(value, "server")


class DropoutConfig(_Model):
    """Overrides of a device profile's failure behaviour (None = keep the profile's value)."""

    # probability that a client is offline for a whole round
    offline: Prob | None = None
    # probability that a request fails / the device crashes mid-request
    fail: Prob | None = None
    # multiplies the profile's latency (2.0 = twice as slow)
    slowdown: Annotated[float, Field(gt=0.0)] | None = None


class ClientGroup(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    count: PosInt = 1
    model: str = "zoo:expert"
    export: Literal["fp32", "int8", "int4"] = "fp32"
    reward_mode: Literal["auto", "answer", "agreement", "likelihood", "format"] = "auto"
    format_weight: Prob = 0.0
    profile: str = "laptop"
    # zoo experts only (`model: zoo:expert`): how good the group's experts are. strong = the
    # default expert; weak = trained briefly (its own judgements are often wrong); wrong =
    # trained on its partition with every answer misconceived (a confidently wrong client).
    quality: Literal["strong", "weak", "wrong"] = "strong"
    # live mode: one URL per device (``url`` for a group of one, or ``urls`` with ``count``)
    url: str | None = None
    urls: list[str] | None = None
    token: str | None = None
    token_env: str | None = None
    dropout: DropoutConfig | None = None

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return _check_model_source(value, "client")

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        known = known_profiles()
        if value not in known:
            raise _err(
                "profile",
                "'{value}' is not a known profile; known: {known}",
                value=value,
                known=", ".join(known),
            )
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://\S+$", value):
            raise _err("url", "'{value}' is not an http(s) URL", value=value)
        return value

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str] | None) -> list[str] | None:
        for u in value or []:
            if not re.match(r"^https?://\S+$", u):
                raise _err("url", "'{value}' is not an http(s) URL", value=u)
        return value

    def device_urls(self) -> list[str]:
        if self.urls is not None:
            return list(self.urls)
        return [self.url] if self.url is not None else []


class ClientsConfig(_Model):
    groups: list[ClientGroup] = Field(
        default_factory=lambda: [ClientGroup(name="expert", count=5)], min_length=1
    )

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups)


class SelectionConfig(_Model):
    selector: Literal["confidence_graph", "random", "oracle", "all"] = "confidence_graph"
    L: PosInt = 20
    M: PosInt = 2
    aux_size: PosInt = 100
    dispatch: Literal["split", "broadcast"] = "broadcast"
    # re-query competence every N rounds (0 = only when clients join/leave/change model)
    refresh_every: NonNegInt = 0
    # hidden layer of the frozen server model whose mean-pooled state embeds questions
    encoder_layer: int = -1
    # competence assumed for a client with no answers yet
    prior: Prob = 0.5


class RoundPolicy(_Model):
    deadline_s: Annotated[float, Field(gt=0.0)] = 30.0
    # minimum rewarded candidates for a question's group to carry signal (SPEC: 2); groups
    # below it contribute nothing to the update (None = 2)
    quorum: PosInt | None = None
    # close the round early once this fraction of groups reached quorum (None = wait for all
    # assignments or the deadline); outstanding work is cancelled
    round_quorum: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    # extra experts asked per question beyond M; the first answers win, the rest are cancelled
    over_selection: NonNegInt = 0
    max_retries: NonNegInt = 0
    async_: bool = Field(False, alias="async")
    # async: rewards for a policy at most this many versions old are still used
    max_staleness: NonNegInt = 1


class EvalConfig(_Model):
    every: NonNegInt = 10  # 0 = only before the first and after the last round
    per_domain: PosInt = 100
    at_start: bool = True


class CheckpointConfig(_Model):
    every: NonNegInt = 5  # 0 = only at the end (and on Ctrl-C)
    keep: PosInt = 2


class OutputsConfig(_Model):
    plots: bool = True
    csv: bool = True
    progress: bool = True


class EmulateConfig(_Model):
    # device-profile latencies are multiplied by this (0.01 = 100x faster than real)
    time_scale: Annotated[float, Field(gt=0.0)] = 0.01
    startup_timeout_s: Annotated[float, Field(gt=0.0)] = 60.0
    host: str = "127.0.0.1"


class SimConfig(_Model):
    # model: real models score candidates; timing: only time/bytes/failures are simulated
    reward_source: Literal["model", "timing"] = "model"
    dropout: DropoutConfig | None = None


class Scenario(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    description: str = ""
    mode: Literal["sim", "emulate", "live"] = "sim"
    seed: int = 0
    rounds: PosInt = 60
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    round_policy: RoundPolicy = Field(default_factory=lambda: RoundPolicy.model_validate({}))
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    emulate: EmulateConfig = Field(default_factory=EmulateConfig)
    sim: SimConfig = Field(default_factory=SimConfig)

    # ---- conveniences for the runner

    @property
    def quorum(self) -> int:
        q = self.round_policy.quorum
        return 2 if q is None else q

    @property
    def num_partitions(self) -> int:
        n = self.tasks.partition.num_clients
        return self.clients.total if n is None else n

    @property
    def models_needed(self) -> bool:
        """False for timing-only simulations (no model is loaded or trained)."""
        return not (self.mode == "sim" and self.sim.reward_source == "timing")

    def partition_qualities(self) -> tuple[str, ...]:
        """Expert quality per partition, from the groups whose clients hold it (zoo:expert);
        () when every expert is strong, so default zoos keep their recipes."""
        qualities = ["strong"] * self.num_partitions
        for c in self.client_list():
            if c.group.model == ZOO_PREFIX + ZOO_EXPERT:
                qualities[c.index % self.num_partitions] = c.group.quality
        return () if set(qualities) <= {"strong"} else tuple(qualities)

    def client_list(self) -> list[ClientSpec]:
        """One entry per client, in group order. Client ``k`` holds partition
        ``k mod num_partitions`` (several devices may share one partition's data and expert)."""
        out: list[ClientSpec] = []
        for group in self.clients.groups:
            urls = group.device_urls()
            for i in range(group.count):
                k = len(out)
                model = group.model
                if model == ZOO_PREFIX + ZOO_EXPERT:
                    model = f"{ZOO_PREFIX}expert-{k % self.num_partitions}"
                out.append(
                    ClientSpec(
                        index=k,
                        id=f"{group.name}-{i}",
                        group=group,
                        model=model,
                        url=urls[i] if i < len(urls) else None,
                    )
                )
        return out


@dataclass(frozen=True)
class ClientSpec:
    """One concrete client expanded from a group (``model`` with ``zoo:expert`` resolved)."""

    index: int
    id: str
    group: ClientGroup
    model: str
    url: str | None


# --------------------------------------------------------------------------- cross-field


def cross_field_errors(s: Scenario) -> list[tuple[str, str]]:
    """(field path, message) for every problem that involves several fields."""
    errors: list[tuple[str, str]] = []
    total = s.clients.total
    g = s.server.grpo.group_size
    rp = s.round_policy
    if rp.quorum is not None and rp.quorum > g:
        errors.append(
            (
                "round_policy.quorum",
                f"{rp.quorum} is larger than server.grpo.group_size ({g}); allowed 1..{g}",
            )
        )
    sel = s.selection
    n_experts, n_neighbours = sel.M, sel.L
    if sel.selector != "all" and n_experts > total:
        errors.append(
            (
                "selection.M",
                f"{sel.M} experts per question but only {total} clients; allowed 1..{total}",
            )
        )
    if sel.dispatch == "split" and sel.selector != "all" and n_experts > g:
        errors.append(
            (
                "selection.M",
                f"{sel.M} experts cannot split {g} candidates (server.grpo.group_size); "
                f"use M <= {g} or dispatch: broadcast",
            )
        )
    if sel.selector == "confidence_graph" and n_neighbours > sel.aux_size:
        errors.append(
            (
                "selection.L",
                f"{sel.L} neighbours but aux_size is {sel.aux_size}; allowed 1..{sel.aux_size}",
            )
        )
    max_aux = s.tasks.aux_pool_per_domain * len(s.tasks.domains)
    if sel.aux_size > max_aux:
        errors.append(
            (
                "selection.aux_size",
                f"{sel.aux_size} is more than the auxiliary pool "
                f"(tasks.aux_pool_per_domain x domains = {max_aux}); allowed 1..{max_aux}",
            )
        )
    names = [grp.name for grp in s.clients.groups]
    for i, name in enumerate(names):
        if name in names[:i]:
            errors.append(
                (
                    f"clients.groups[{i}].name",
                    f"{name!r} is used by another group; names must be unique",
                )
            )
    part = s.tasks.partition
    domains = set(s.tasks.domains)
    if part.client_domains is not None:
        if part.scheme != "by_domain":
            errors.append(
                (
                    "tasks.partition.client_domains",
                    f"is only used with scheme by_domain, not {part.scheme!r}",
                )
            )
        if len(part.client_domains) != s.num_partitions:
            errors.append(
                (
                    "tasks.partition.client_domains",
                    f"lists {len(part.client_domains)} clients but there are {s.num_partitions} "
                    "partitions (tasks.partition.num_clients or the total client count); make them agree",
                )
            )
        for k, doms in enumerate(part.client_domains):
            if not doms:
                errors.append(
                    (
                        f"tasks.partition.client_domains[{k}]",
                        "is empty; give every client 1-2 domains",
                    )
                )
            for d in doms:
                if d not in domains:
                    errors.append(
                        (
                            f"tasks.partition.client_domains[{k}]",
                            f"{d!r} is not in tasks.domains; allowed: {', '.join(s.tasks.domains)}",
                        )
                    )
    if s.models_needed:
        uses_expert = any(grp.model == ZOO_PREFIX + ZOO_EXPERT for grp in s.clients.groups)
        if uses_expert and s.num_partitions > total:
            errors.append(
                (
                    "tasks.partition.num_clients",
                    f"{s.num_partitions} partitions but only {total} clients use zoo:expert (client k "
                    "gets partition k mod num_clients); leave num_clients unset or lower it",
                )
            )
        held: dict[int, str] = {}
        for c in s.client_list():
            if c.group.model != ZOO_PREFIX + ZOO_EXPERT:
                continue
            k = c.index % s.num_partitions
            if held.setdefault(k, c.group.quality) != c.group.quality:
                errors.append(
                    (
                        f"clients.groups[{names.index(c.group.name)}].quality",
                        f"{c.group.quality!r} but partition {k} is also held by a "
                        f"{held[k]!r} client; clients sharing a partition share its expert, "
                        "so give them one quality (or more partitions)",
                    )
                )
                break
        for i, grp in enumerate(s.clients.groups):
            m = (
                _ZOO_EXPERT_K.match(grp.model[len(ZOO_PREFIX) :])
                if grp.model.startswith(ZOO_PREFIX)
                else None
            )
            if m is not None and int(m.group(1)) >= s.num_partitions:
                errors.append(
                    (
                        f"clients.groups[{i}].model",
                        f"{grp.model!r} names partition {m.group(1)} but there are only "
                        f"{s.num_partitions}; allowed expert-0..expert-{s.num_partitions - 1}",
                    )
                )
    for i, grp in enumerate(s.clients.groups):
        where = f"clients.groups[{i}]"
        if grp.url is not None and grp.urls is not None:
            errors.append(
                (f"{where}.url", "give either url (one device) or urls (one per device), not both")
            )
        if grp.urls is not None and len(grp.urls) != grp.count:
            errors.append(
                (
                    f"{where}.urls",
                    f"lists {len(grp.urls)} URLs but count is {grp.count}; give one URL per device",
                )
            )
        if grp.url is not None and grp.count != 1:
            errors.append(
                (
                    f"{where}.url",
                    f"one url for count {grp.count}; use urls: [...] with one URL per device",
                )
            )
        if grp.token is not None and grp.token_env is not None:
            errors.append((f"{where}.token", "give either token or token_env, not both"))
        if s.mode == "live" and not grp.device_urls():
            errors.append(
                (f"{where}.url", "mode live needs the device URL(s) of every group (url or urls)")
            )
    if s.mode == "live" and s.sim.reward_source == "timing":
        errors.append(("sim.reward_source", "'timing' only exists in mode sim"))
    if s.mode == "emulate" and s.sim.reward_source == "timing":
        errors.append(
            ("sim.reward_source", "'timing' only exists in mode sim; emulate runs real models")
        )
    if s.server.baseline != "fedgrpo" and not s.models_needed:
        errors.append(
            ("server.baseline", f"{s.server.baseline!r} needs models; set sim.reward_source: model")
        )
    return errors
