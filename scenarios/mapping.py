"""The one place that turns validated scenario sections into runtime dataclasses.

* ``server.grpo`` -> :class:`fedgrpo.server.grpo.config.GRPOConfig` (:func:`grpo_config`);
* ``round_policy`` -> :class:`fedgrpo.rounds.RoundPolicy` (:func:`round_policy`);
* the whole scenario -> :class:`fedgrpo.sim.config.SimConfig` with its
  :class:`~fedgrpo.sim.config.WorkloadSpec` and one :class:`~fedgrpo.sim.config.ClientSpec`
  per client (:func:`sim_config`, :func:`workload`, :func:`sim_client`);
* ``server.device``/``dtype``/``gradient_checkpointing``/``compile`` ->
  :class:`fedgrpo.server.device.DeviceConfig` and ``server.prompt`` ->
  :class:`fedgrpo.server.prompting.PromptConfig` (:func:`device_config`, :func:`prompt_config`);
* each client's reward settings (:func:`client_rewards`): every request to a client carries
  its own group's ``reward_mode`` and ``format_weight``, in every mode.

Units: ``round_policy.over_selection`` is a COUNT in YAML and at runtime alike (extra experts
per question on top of ``selection.M``; :class:`~fedgrpo.rounds.RoundPolicy` takes the same
number). :func:`experts_ranked` / :func:`reserve_per_question` give the selector's and the
async gatherer's counts, so sim, emulate and live ask the same ``primaries + extras``
experts per question.

:func:`runtime_targets` declares, per runtime dataclass, which scenario path feeds each field
and why the others are not user-settable; ``tests/test_config_parity.py`` walks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedgrpo.scenarios import behaviour_section
from fedgrpo.scenarios.fields import ZOO_PREFIX
from fedgrpo.scenarios.schema import ClientEntry, GRPOSection, Scenario
from fedgrpo.scenarios.task_section import to_task_source

if TYPE_CHECKING:
    from fedgrpo.rounds import RoundPolicy
    from fedgrpo.server.adapters import LoraSpec
    from fedgrpo.server.device import DeviceConfig
    from fedgrpo.server.grpo.config import GRPOConfig
    from fedgrpo.server.grpo.offpolicy import LateRewardConfig
    from fedgrpo.server.prompting import PromptConfig
    from fedgrpo.server.tasks import TaskSource
    from fedgrpo.sim.config import ClientSpec, SimConfig, WorkloadSpec

OFFLINE_CYCLE_DEADLINES = 20  # on/off cycle length for an 'offline: p' override, in deadlines
AGREEMENT_DECODE_TOKENS = 8  # tokens an agreement-scoring device decodes per request
NO_CLIPPING = 1e9  # grad_clip: null


# --------------------------------------------------------------------------- trainer


def grpo_config(s: Scenario) -> GRPOConfig:
    """``server.grpo`` with the same field names; ``grad_clip: null`` = no clipping and
    ``lr_decay_rounds: null`` = the run's number of rounds."""
    from fedgrpo.server.grpo.config import GRPOConfig

    values = s.server.grpo.model_dump()
    values["grad_clip"] = NO_CLIPPING if values["grad_clip"] is None else values["grad_clip"]
    if values["lr_decay_rounds"] is None:
        values["lr_decay_rounds"] = s.rounds
    return GRPOConfig(**values)


def task_source(s: Scenario) -> TaskSource:
    """``tasks.source`` -> :class:`fedgrpo.server.tasks.TaskSource` (scenarios/task_section.py)."""
    return to_task_source(s.tasks.source)


# --------------------------------------------------------------------------- experts per question


def device_config(s: Scenario) -> DeviceConfig:
    from fedgrpo.server.device import DeviceConfig

    v = s.server
    return DeviceConfig(v.device, v.dtype, v.gradient_checkpointing, v.compile)


def prompt_config(s: Scenario) -> PromptConfig:
    from fedgrpo.server.prompting import PromptConfig

    return PromptConfig(**s.server.prompt.model_dump(), seed=s.seed)


def lora_spec(s: Scenario) -> LoraSpec | None:
    """``server.lora`` -> :class:`fedgrpo.server.adapters.LoraSpec` (None: full fine-tuning)."""
    from fedgrpo.server.adapters import LoraSpec

    v = s.server.lora
    if v is None:
        return None
    targets = v.target_modules if isinstance(v.target_modules, str) else tuple(v.target_modules)
    return LoraSpec(v.rank, v.alpha, v.dropout, targets)


def primaries_per_question(s: Scenario) -> int:
    """Experts that share a question's candidates: M, or every client for selector 'all'."""
    return s.clients.total if s.selection.selector == "all" else s.selection.M


def reserve_per_question(s: Scenario) -> int:
    """Over-selected experts per question (the YAML count; none left for selector 'all')."""
    return 0 if s.selection.selector == "all" else s.round_policy.over_selection


def experts_ranked(s: Scenario) -> int:
    """How many experts the selector ranks per question: primaries first, then the reserve."""
    return s.selection.M + reserve_per_question(s)


def round_policy(s: Scenario) -> RoundPolicy:
    """The round policy in :mod:`fedgrpo.rounds` terms (the same names and units)."""
    from fedgrpo.rounds import RoundPolicy

    rp = s.round_policy
    return RoundPolicy(
        deadline_s=rp.deadline_s,
        quorum=s.quorum,
        round_quorum=rp.round_quorum,
        over_selection=reserve_per_question(s),
        max_retries=rp.max_retries,
        reward_range=behaviour_section.reward_range(s),
    )


def late_rewards(s: Scenario) -> LateRewardConfig:
    """How late rewards enter the update (the trainer uses it only with ``async: true``)."""
    from fedgrpo.server.grpo.offpolicy import LateRewardConfig

    rp = s.round_policy
    return LateRewardConfig(
        rp.max_staleness, rp.correction, rp.is_cap, rp.min_coverage, rp.min_update_groups
    )


# --------------------------------------------------------------------------- rewards per client


@dataclass(frozen=True)
class ClientRewards:
    """What one client's score requests carry (its group's settings)."""

    reward_mode: str
    format_weight: float
    partial_credit: float = 0.0

    @property
    def decode_tokens(self) -> int:
        """Tokens the device decodes per request (agreement scoring generates an answer)."""
        return AGREEMENT_DECODE_TOKENS if self.reward_mode in ("auto", "agreement") else 0


def client_rewards(s: Scenario) -> list[ClientRewards]:
    """Index k = client k's reward settings, from its own group."""
    return [
        ClientRewards(c.group.reward_mode, c.group.format_weight, c.group.partial_credit)
        for c in s.client_list()
    ]


# --------------------------------------------------------------------------- simulator


def size_class(model: str) -> str:
    """The simulator's size class of a client model source."""
    if model.startswith(ZOO_PREFIX):
        return "tiny"
    return "135m" if "smollm2" in model.lower() else "1b"


def sim_client(s: Scenario, client: ClientEntry, competence: Any = 0.8) -> ClientSpec:
    """The client's simulated device: its group's profile and dropout (else ``sim.dropout``)."""
    from fedgrpo.sim.config import AvailabilitySpec, ClientSpec
    from fedgrpo.sim.devices import get_profile

    group = client.group
    drop = group.dropout or s.sim.dropout
    profile: Any = group.profile
    availability, speed = AvailabilitySpec(), 1.0
    if drop is not None and drop.fail is not None:
        profile = get_profile(group.profile, crash_prob=drop.fail)
    if drop is not None and drop.offline is not None:
        p = min(drop.offline, 0.999)
        cycle = OFFLINE_CYCLE_DEADLINES * s.round_policy.deadline_s
        availability = (
            AvailabilitySpec(kind="always")
            if p <= 0
            else AvailabilitySpec(kind="markov", mean_on_s=(1 - p) * cycle, mean_off_s=p * cycle)
        )
    if drop is not None and drop.slowdown is not None:
        speed = 1.0 / drop.slowdown
    bandwidth = None
    if s.sim.fedscale is not None:  # FedScale device k: speed, bandwidth, availability
        dev = s.sim.fedscale.device(client.index)
        availability = dev.availability or availability
        speed, bandwidth = speed * dev.speed_factor, dev.bandwidth_mbps
    return ClientSpec(
        profile=profile,
        size_class=size_class(client.model),
        competence=competence,
        availability=availability,
        speed_factor=speed,
        bandwidth_mbps=bandwidth,
    )


def workload(s: Scenario) -> WorkloadSpec:
    from fedgrpo.sim.config import WorkloadSpec

    g, sel = s.server.grpo, s.selection
    return WorkloadSpec(
        domains=tuple(s.tasks.domains),
        questions_per_round=g.questions_per_round,
        group_size=g.group_size,
        experts_per_question=primaries_per_question(s),
        dispatch=sel.dispatch,
        selector="top" if sel.selector in ("oracle", "confidence_graph") else "random",
        completion_tokens=g.max_new_tokens,
        decode_tokens=max((r.decode_tokens for r in client_rewards(s)), default=0),
    )


def sim_config(s: Scenario, competences: list[Any] | None = None) -> SimConfig:
    """The simulated deployment (competences: per client, for the timing-only surrogate)."""
    from fedgrpo.sim.config import SimConfig

    clients = s.client_list()
    comps = competences or [0.8] * len(clients)
    return SimConfig(
        clients=tuple(sim_client(s, c, comp) for c, comp in zip(clients, comps)),
        policy=round_policy(s),
        workload=workload(s),
        mode="async" if s.round_policy.async_ else "sync",
        max_staleness=s.round_policy.max_staleness,
    )


# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class RuntimeTarget:
    """How one runtime dataclass is fed: ``sources`` (field -> scenario paths, as ``--set``
    writes them), ``nested`` (field -> the target that builds it), ``fixed`` (field -> why it
    is not user-settable). ``build`` makes the object from a scenario."""

    runtime: type
    build: Callable[[Scenario], Any]
    sources: Mapping[str, tuple[str, ...]]
    fixed: Mapping[str, str] = field(default_factory=dict)
    nested: Mapping[str, str] = field(default_factory=dict)


G0 = "clients.groups.0"


def _grpo_target() -> RuntimeTarget:
    from fedgrpo.server.grpo.config import GRPOConfig

    names = GRPOSection.model_fields  # same names on both sides (grpo_config passes them all)
    return RuntimeTarget(GRPOConfig, grpo_config, {n: (f"server.grpo.{n}",) for n in names})


def _round_policy_target() -> RuntimeTarget:
    from fedgrpo.rounds import RoundPolicy

    names = ("deadline_s", "quorum", "round_quorum", "over_selection", "max_retries")
    return RuntimeTarget(
        RoundPolicy,
        round_policy,
        {n: (f"round_policy.{n}",) for n in names},
        fixed={
            "retry_backoff_s": "retries are immediate; a scenario tunes retries by max_retries",
            "retry_min_remaining_s": "a retry is sent whenever time is left before the deadline",
            "retry_invalid": "a device that sent an invalid reward once is not asked again",
            "close_early": "a round always closes once every assignment is resolved",
            "reward_range": "rewards are protocol-defined in [0, 1] (edge/protocol.py), widened "
            "for clients whose privacy mechanism adds noise (behaviour_section.reward_range)",
        },
    )


def _sim_config_target() -> RuntimeTarget:
    from fedgrpo.sim.config import SimConfig

    sim_only = "a simulator internal, not part of the scenario file (set it from Python)"
    return RuntimeTarget(
        SimConfig,
        sim_config,
        {"mode": ("round_policy.async",), "max_staleness": ("round_policy.max_staleness",)},
        fixed={
            n: sim_only
            for n in (
                "connect_timeout_s",
                "update_s",
                "cancel_queued",
                "request_overhead_bytes",
                "response_overhead_bytes",
                "response_bytes_per_value",
            )
        },
        nested={"clients": "ClientSpec", "policy": "RoundPolicy", "workload": "WorkloadSpec"},
    )


def _workload_target() -> RuntimeTarget:
    from fedgrpo.sim.config import WorkloadSpec

    surrogate = "timing-only surrogate constant, not part of the scenario file"
    return RuntimeTarget(
        WorkloadSpec,
        workload,
        {
            "domains": ("tasks.domains",),
            "questions_per_round": ("server.grpo.questions_per_round",),
            "group_size": ("server.grpo.group_size",),
            "experts_per_question": ("selection.M",),
            "dispatch": ("selection.dispatch",),
            "selector": ("selection.selector",),
            "completion_tokens": ("server.grpo.max_new_tokens",),
            "decode_tokens": (f"{G0}.reward_mode",),
        },
        fixed={
            "question_tokens": surrogate,
            "chars_per_token": surrogate,
            "policy_accuracy": surrogate,
            "reward_mode": "unused by the engine: each request carries its client's own mode "
            "(client_rewards)",
        },
    )


def _client_target() -> RuntimeTarget:
    from fedgrpo.sim.config import ClientSpec

    def first(s: Scenario) -> ClientSpec:
        return sim_client(s, s.client_list()[0])

    return RuntimeTarget(
        ClientSpec,
        first,
        {
            "profile": (f"{G0}.profile", f"{G0}.dropout.fail", "sim.dropout.fail"),
            "size_class": (f"{G0}.model",),
            "availability": (
                f"{G0}.dropout.offline",
                "sim.dropout.offline",
                "sim.fedscale.behavior",
            ),
            "speed_factor": (f"{G0}.dropout.slowdown", "sim.dropout.slowdown"),
            # the capacity file also scales speed_factor (one path feeds one field here)
            "bandwidth_mbps": ("sim.fedscale.capacity",),
        },
        fixed={
            "competence": "derived: the timing surrogate's judge quality from the partitions",
        },
    )


def _late_rewards_target() -> RuntimeTarget:
    from fedgrpo.server.grpo.offpolicy import LateRewardConfig

    names = ("max_staleness", "correction", "is_cap", "min_coverage", "min_update_groups")
    return RuntimeTarget(LateRewardConfig, late_rewards, {n: (f"round_policy.{n}",) for n in names})


def runtime_targets() -> dict[str, RuntimeTarget]:
    """Every runtime dataclass a scenario configures, by class name."""
    return {
        "GRPOConfig": _grpo_target(),
        "RoundPolicy": _round_policy_target(),
        "SimConfig": _sim_config_target(),
        "WorkloadSpec": _workload_target(),
        "ClientSpec": _client_target(),
        "LateRewardConfig": _late_rewards_target(),
    }


# Fields of the mapped sections (server.grpo, round_policy, sim, a client group) that feed
# no runtime dataclass field, and where they go instead.
SCHEMA_ONLY: dict[str, str] = {
    "sim.reward_source": "chooses the simulator's rewards (runtimes/sim.py): model scorers or "
    "the timing surrogate",
    "sim.engine": "which simulator a timing-only run uses (runtimes/sim.py): the event engine "
    "or the vectorised path",
    f"{G0}.format_weight": "carried by each of the client's score requests (client_rewards)",
    f"{G0}.partial_credit": "carried by each of the client's score requests (client_rewards)",
    f"{G0}.name": "client ids (<name>-<i>) and error messages",
    f"{G0}.count": "how many clients the group expands to (Scenario.client_list)",
    f"{G0}.export": "the ONNX variant each client serves (experiments/context.py)",
    f"{G0}.quality": "which zoo expert the group's partitions get (zoo recipe)",
    f"{G0}.url": "live mode: the device URL (runtimes/live.py)",
    f"{G0}.urls": "live mode: one URL per device (runtimes/live.py)",
    f"{G0}.token": "live mode: the bearer token (runtimes/live.py)",
    f"{G0}.token_env": "live mode: where the bearer token is read from (runtimes/live.py)",
    **behaviour_section.SCHEMA_ONLY,
}
