"""The typed scenario schema (pydantic v2): one file describes one whole experiment.

Every section forbids unknown keys; defaults are the quickstart's values. Section classes are
named ``*Section`` (``ClientGroup`` / ``ClientEntry`` for clients) so none shares a name with
the runtime dataclass it configures; :mod:`fedgrpo.scenarios.mapping` is the one place that
turns validated sections into runtime objects. Field-level checks (types, ranges, known
domains, device profiles, model sources) live here and in :mod:`fedgrpo.scenarios.fields`;
checks relating several fields live in :mod:`fedgrpo.scenarios.checks`, which the loader runs
after validation so every problem is reported with its own field path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from fedgrpo.scenarios.behaviour_section import BehaviourSection, PrivacySection, TrustSection
from fedgrpo.scenarios.fedscale_section import FedScaleSection
from fedgrpo.scenarios.fields import (
    NAME_RE,
    ZOO_EXPERT,
    ZOO_PREFIX,
    ScenarioError,
    check_known,
    check_model_source,
    check_url,
    err,
    known_domains,
    known_profiles,
)
from fedgrpo.scenarios.reward_fields import ClientRewardFields
from fedgrpo.scenarios.server_model_section import ServerModelFields
from fedgrpo.scenarios.task_section import TaskSourceSection
from fedgrpo.scenarios.tracking_section import Loggers

__all__ = [
    "ZOO_PREFIX",
    "CheckpointSection",
    "ClientEntry",
    "ClientGroup",
    "ClientsSection",
    "DropoutSection",
    "EmulateSection",
    "EvalSection",
    "GRPOSection",
    "OutputsSection",
    "PartitionSection",
    "RoundPolicySection",
    "Scenario",
    "ScenarioError",
    "SelectionSection",
    "ServerSection",
    "SimSection",
    "TaskSourceSection",
    "TasksSection",
    "known_profiles",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)


PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Prob = Annotated[float, Field(ge=0.0, le=1.0)]


class PartitionSection(_Section):
    """How the training split is spread over clients (each client = one partition)."""

    scheme: Literal["by_domain", "iid", "dirichlet"] = "by_domain"
    dirichlet_beta: Annotated[float, Field(gt=0.0)] = 0.5
    # by_domain: domains of each client; default client k gets domain k mod D.
    client_domains: list[list[str]] | None = None
    # number of partitions; None = the total client count
    num_clients: PosInt | None = None


class TasksSection(_Section):
    # where the task comes from (scenarios/task_section.py): builtin, a dataset file, a plug-in
    source: TaskSourceSection = Field(default_factory=lambda: TaskSourceSection.model_validate({}))
    # builtin: the domains; dataset/plugin: a subset of the data's domains (empty = all)
    domains: list[str] = Field(default_factory=lambda: ["add", "sub", "mul", "mod", "sort"])
    train_per_domain: PosInt = 2000
    test_per_domain: PosInt = 100
    aux_pool_per_domain: PosInt = 100
    partition: PartitionSection = Field(default_factory=PartitionSection)

    @field_validator("domains")
    @classmethod
    def _known_domains(cls, value: list[str], info: ValidationInfo) -> list[str]:
        known = known_domains()
        source = info.data.get("source")
        if source is not None and source.kind != "builtin":
            known = tuple(value)  # the data's domains are checked when it is read
        elif not value:
            raise err("domains", "no domains given; known: {known}", known=", ".join(known))
        for name in value:
            check_known(name, known, "domain")
        dupes = sorted({d for d in value if value.count(d) > 1})
        if dupes:
            raise err("domain", "domains repeat {dupes}; list each once", dupes=dupes)
        return value

    @model_validator(mode="after")
    def _data_domains(self) -> TasksSection:
        if self.source.kind != "builtin" and "domains" not in self.model_fields_set:
            self.domains = []  # every domain the data has
        return self


class GRPOSection(_Section):
    """``server.grpo``: maps 1:1 (same names) onto ``fedgrpo.server.grpo.config.GRPOConfig``."""

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
    reward_combine: Literal["mean", "median", "trimmed_mean", "trust"] = "mean"
    trim: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.2
    # null = no clipping
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
    # each distinct prompt runs once, its KV cache reused by the G candidates (server/prefix.py)
    share_prompt: bool = False
    drop_zero_variance: bool = False  # flat-reward groups leave the update (grpo/config.py)


class ServerSection(_Section, ServerModelFields):  # + device, dtype, prompt, ...
    model: str = "zoo:server-base"
    grpo: GRPOSection = Field(default_factory=GRPOSection)
    baseline: Literal["fedgrpo", "central_grpo", "zero_shot"] = "fedgrpo"
    trust: TrustSection = Field(default_factory=TrustSection)  # reward_combine: trust
    # torch intra-op threads for rollout, update and evaluation. 1 suits the tiny zoo models
    # (a thread pool only adds overhead at that size, and collapses on a busy machine);
    # raise it for bigger models such as SmolLM2. null = torch's default (all cores).
    threads: PosInt | None = 1

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return check_model_source(value, "server")


class DropoutSection(_Section):
    """Overrides of a device profile's failure behaviour (None = keep the profile's value)."""

    # probability that a client is offline for a whole round
    offline: Prob | None = None
    # probability that a request fails / the device crashes mid-request
    fail: Prob | None = None
    # multiplies the profile's latency (2.0 = twice as slow)
    slowdown: Annotated[float, Field(gt=0.0)] | None = None


class ClientGroup(_Section, ClientRewardFields):  # + reward_mode, format_weight, partial_credit
    """One entry of ``clients.groups``: ``count`` clients that share these settings."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    count: PosInt = 1
    model: str = "zoo:expert"
    export: Literal["fp32", "int8", "int4"] = "fp32"
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
    dropout: DropoutSection | None = None
    behaviour: BehaviourSection = Field(default_factory=BehaviourSection)  # Byzantine clients
    privacy: PrivacySection = Field(default_factory=PrivacySection)  # local DP of rewards

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return check_model_source(value, "client")

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        return check_known(value, known_profiles(), "profile")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_url(u) for u in value]

    def device_urls(self) -> list[str]:
        if self.urls is not None:
            return list(self.urls)
        return [self.url] if self.url is not None else []


class ClientsSection(_Section):
    groups: list[ClientGroup] = Field(
        default_factory=lambda: [ClientGroup(name="expert", count=5)], min_length=1
    )

    @property
    def total(self) -> int:
        return sum(g.count for g in self.groups)


class SelectionSection(_Section):
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


class RoundPolicySection(_Section):
    """``round_policy``: mapped onto ``fedgrpo.rounds.RoundPolicy`` by
    :func:`fedgrpo.scenarios.mapping.round_policy` (async/max_staleness onto the simulator)."""

    deadline_s: Annotated[float, Field(gt=0.0)] = 30.0
    # minimum rewarded candidates for a question's group to carry signal (SPEC: 2); groups
    # below it contribute nothing to the update (None = 2)
    quorum: PosInt | None = None
    # close the round early once this fraction of groups reached quorum (None = wait for all
    # assignments or the deadline); outstanding work is cancelled
    round_quorum: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    over_selection: NonNegInt = Field(
        default=0,
        description="a COUNT: extra experts asked per question on top of selection.M (so "
        "M + over_selection are asked); the first answers win, the rest are cancelled. Every "
        "mode asks the same number; fedgrpo.scenarios.mapping turns it into the runtime's "
        "factor (over_selection / M) in one place. No effect with selector 'all' (every "
        "client is already asked).",
    )
    max_retries: NonNegInt = 0
    async_: bool = Field(False, alias="async")
    # async: rewards for a policy at most this many versions old are still used
    max_staleness: NonNegInt = 1
    # async: late groups enter the update with a truncated importance weight (truncated_is,
    # cap is_cap) or as if on-policy (none); a group below min_coverage at its close waits
    correction: Literal["truncated_is", "none"] = "truncated_is"
    is_cap: Annotated[float, Field(gt=0.0)] = 2.0
    min_coverage: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    min_update_groups: PosInt = 1  # async: FedBuff's K, groups ready before an update


class EvalSection(_Section):
    every: NonNegInt = 10  # 0 = only before the first and after the last round
    per_domain: PosInt = 100
    at_start: bool = True


class CheckpointSection(_Section):
    every: NonNegInt = 5  # 0 = only at the end (and on Ctrl-C)
    keep: PosInt = 2


class OutputsSection(_Section):
    plots: bool = True
    csv: bool = True
    progress: bool = True
    # the final policy as a Hugging Face directory (RUN_DIR/final_model, save_pretrained)
    save_model: bool = True
    # experiment trackers: tensorboard, mlflow, wandb (scenarios/tracking_section.py)
    loggers: Loggers = Field(default_factory=list)


class EmulateSection(_Section):
    # device-profile latencies are multiplied by this (0.01 = 100x faster than real)
    time_scale: Annotated[float, Field(gt=0.0)] = 0.01
    startup_timeout_s: Annotated[float, Field(gt=0.0)] = 60.0
    host: str = "127.0.0.1"


class SimSection(_Section):
    """``sim``: which rewards a simulation uses and fleet-wide dropout (the runtime
    ``fedgrpo.sim.config.SimConfig`` is built from the whole scenario by the mapping)."""

    # model: real models score candidates; timing: only time/bytes/failures are simulated
    reward_source: Literal["model", "timing"] = "model"
    dropout: DropoutSection | None = None
    # timing-only studies: event (discrete events, simpy) or vectorised (closed-form rounds
    # over arrays, sim.vectorised; sync mode; same records); model rewards need "event"
    engine: Literal["event", "vectorised"] = "event"
    # FedScale device/availability traces (scenarios/fedscale_section.py)
    fedscale: FedScaleSection | None = None


class Scenario(_Section):
    name: Annotated[str, Field(pattern=NAME_RE)]
    description: str = ""
    mode: Literal["sim", "emulate", "live"] = "sim"
    seed: int = 0
    rounds: PosInt = 60
    tasks: TasksSection = Field(default_factory=TasksSection)
    server: ServerSection = Field(default_factory=ServerSection)
    clients: ClientsSection = Field(default_factory=ClientsSection)
    selection: SelectionSection = Field(default_factory=SelectionSection)
    round_policy: RoundPolicySection = Field(
        default_factory=lambda: RoundPolicySection.model_validate({})
    )
    eval: EvalSection = Field(default_factory=EvalSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    outputs: OutputsSection = Field(default_factory=OutputsSection)
    emulate: EmulateSection = Field(default_factory=EmulateSection)
    sim: SimSection = Field(default_factory=SimSection)

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

    def client_list(self) -> list[ClientEntry]:
        """One entry per client, in group order. Client ``k`` holds partition
        ``k mod num_partitions`` (several devices may share one partition's data and expert)."""
        out: list[ClientEntry] = []
        for group in self.clients.groups:
            urls = group.device_urls()
            for i in range(group.count):
                k = len(out)
                model = group.model
                if model == ZOO_PREFIX + ZOO_EXPERT:
                    model = f"{ZOO_PREFIX}expert-{k % self.num_partitions}"
                url = urls[i] if i < len(urls) else None
                out.append(ClientEntry(k, f"{group.name}-{i}", group, model, url))
        return out


@dataclass(frozen=True)
class ClientEntry:
    """One concrete client expanded from a group (``model`` with ``zoo:expert`` resolved)."""

    index: int
    id: str
    group: ClientGroup
    model: str
    url: str | None
